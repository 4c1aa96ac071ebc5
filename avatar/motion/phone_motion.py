"""A mouth driven by phones instead of sound: a synthesiser's (or an aligner's) timed phones ->
one blendshape row per video frame, on the engine's frame grid and with its lead.

This is the phone -> pose table of :mod:`avatar.motion.targets` (what the audio model was first
trained to imitate) sampled where each frame shows: video frame ``i`` shows the sound at
``i / fps + lead_s``, as :class:`~avatar.motion.stream.MotionStreamer` places the audio model's
frames (the mouth leads its sound by ``engine.lead_ms`` for buffered input). The visemes are the
covering segment's, one-hot (the renderer seals the lips on ``PP``). ``scripts/eval_text_mouth.py``
measures whether this mouth beats the audio model's (``docs/text_mouth.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatar.motion.channels import BLENDSHAPE_INDEX, VISEMES
from avatar.motion.targets import TimedPhone, motion_targets


@dataclass(frozen=True, slots=True)
class PhoneMotion:
    """Per-frame motion from phones."""

    blendshapes: np.ndarray  # (n_frames, n_blendshapes) float32 in [0, 1]
    visemes: np.ndarray  # (n_frames, n_visemes) float32, one-hot

    def __len__(self) -> int:
        return len(self.blendshapes)


def frame_count(phones: Sequence[TimedPhone], fps: float) -> int:
    """Frames that cover the phones (the last one's end), as a file of that length has."""
    end = max((p.end for p in phones), default=0.0)
    return math.ceil(round(end * fps, 6))


def phone_motion(
    phones: Sequence[TimedPhone], fps: float, lead_s: float = 0.0, n_frames: int | None = None
) -> PhoneMotion:
    """The mouth of ``phones`` on ``n_frames`` video frames (default: :func:`frame_count`);
    frame ``i`` shows the phones at ``i / fps + lead_s`` (past the last phone: rest)."""
    if lead_s < 0:
        raise ValueError("the mouth's lead cannot be negative")
    n = frame_count(phones, fps) if n_frames is None else n_frames
    shown = np.arange(n) / fps + lead_s
    blendshapes, labels = motion_targets(phones, shown)
    visemes = np.eye(len(VISEMES), dtype=np.float32)[labels]
    return PhoneMotion(np.clip(blendshapes, 0.0, 1.0), visemes)


JawCurve = tuple[np.ndarray, np.ndarray]  # (phone-table jawOpen points, jawOpen they become)


def fit_jaw_curve(phone_jaw: np.ndarray, other_jaw: np.ndarray, step: float = 5.0) -> JawCurve:
    """A monotone map that gives the phone table's ``jawOpen`` the distribution of another
    mouth's (the audio model's on the same sound): their quantiles every ``step`` percent, from
    (0, 0) so that rest stays rest. The table gives many frames the same jaw (0.02 on every P/B/M):
    a tied quantile maps to the lowest of its partners, so closures stay closed."""
    qs = np.arange(0.0, 100.0 + 1e-9, step)
    src = np.percentile(phone_jaw, qs)
    dst = np.maximum.accumulate(np.percentile(other_jaw, qs))
    xs, first = np.unique(np.round(src, 6), return_index=True)
    keep = xs > 0
    return np.concatenate([[0.0], xs[keep]]), np.concatenate([[0.0], dst[first][keep]])


def with_jaw_curve(motion: PhoneMotion, curve: JawCurve) -> PhoneMotion:
    """``motion`` with its ``jawOpen`` mapped through ``curve``; the other channels as they are."""
    blendshapes = motion.blendshapes.copy()
    jaw = BLENDSHAPE_INDEX["jawOpen"]
    blendshapes[:, jaw] = np.interp(blendshapes[:, jaw], *curve)
    return PhoneMotion(blendshapes, motion.visemes)
