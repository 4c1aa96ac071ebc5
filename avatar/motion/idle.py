"""Blinks, breathing and slight head motion: what the audio model does not predict.

Deterministic from a seed and the frame's time on the engine clock (never wall time), so a
rendered file is reproducible and a live stream can be tested with a fake clock. Speech makes the
head a little livelier (smoothed jaw activity scales the sway), silence leaves it calm. While
the person talks, ``talking`` rises to 1 (a photo's resting smile relaxes into a talker's mouth)
and it falls back to 0 after the speech (the smile returns).
"""

from __future__ import annotations

import math

import numpy as np

from avatar.frames import MotionFrame
from avatar.units import NS_PER_S

# yaw, pitch, roll sway: (amplitude rad, frequency Hz) pairs, summed
SWAY = (
    ((0.020, 0.071), (0.010, 0.193)),
    ((0.012, 0.113), (0.008, 0.271)),
    ((0.012, 0.089), (0.006, 0.233)),
)
BREATH_HZ = 0.23
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.04, 0.12
TALK_ATTACK_S, TALK_RELEASE_S = 0.12, 0.6  # time constants of the talking envelope


class IdleAnimator:
    """Fills ``head_pose`` and ``blink`` of motion frames, in time order."""

    def __init__(self, seed: int = 0, blink_every_s: tuple[float, float] = (2.0, 6.0)) -> None:
        self.seed = seed
        self._blink_every = blink_every_s
        self.reset()

    def reset(self) -> None:
        """Back to the start of the timeline (same seed: the same blinks again)."""
        self._rng = np.random.default_rng(self.seed)
        self._phases = self._rng.uniform(0, 2 * math.pi, (3, 2))
        self._next_blink_s = float(self._rng.uniform(0.8, self._blink_every[1]))
        self._blink_start_s = -10.0
        self._activity = 0.0
        self._talking = 0.0
        self._last_s = -1.0

    def blink_at(self, t: float) -> float:
        """Lid closure 0..1 at time ``t`` (seconds); schedules the next blink as time passes."""
        if t >= self._next_blink_s:
            self._blink_start_s = self._next_blink_s
            self._next_blink_s += float(self._rng.uniform(*self._blink_every))
        u = t - self._blink_start_s
        if u < 0 or u > BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S:
            return 0.0
        if u < BLINK_CLOSE_S:
            return u / BLINK_CLOSE_S
        if u < BLINK_CLOSE_S + BLINK_HOLD_S:
            return 1.0
        return 1.0 - (u - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S

    def pose_at(self, t: float) -> np.ndarray:
        lively = 1.0 + 0.8 * self._activity
        pose = np.zeros(6, np.float32)
        for axis in range(3):
            pose[axis] = lively * sum(
                a * math.sin(2 * math.pi * f * t + self._phases[axis, k])
                for k, (a, f) in enumerate(SWAY[axis])
            )
        pose[4] = 0.003 * math.sin(2 * math.pi * BREATH_HZ * t)  # breathing lifts the head
        return pose

    def apply(self, frame: MotionFrame) -> MotionFrame:
        t = frame.pts_ns / NS_PER_S
        if t < self._last_s:  # the timeline restarted
            self.reset()
        dt = t - self._last_s if self._last_s >= 0 else 0.0
        self._last_s = t
        jaw = float(frame.blendshapes[0]) if frame.is_speech else 0.0
        self._activity += 0.08 * (min(jaw * 3, 1.0) - self._activity)
        frame.head_pose = self.pose_at(t)
        frame.blink = self.blink_at(t)
        frame.talking = self._talking_after(dt, frame.is_speech)
        return frame

    def _talking_after(self, dt: float, speech: bool) -> float:
        """The talking envelope after ``dt`` seconds of speech (or of silence)."""
        tau = TALK_ATTACK_S if speech else TALK_RELEASE_S
        self._talking += (float(speech) - self._talking) * (1.0 - math.exp(-dt / tau))
        return self._talking
