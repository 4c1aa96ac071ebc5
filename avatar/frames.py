"""Typed frames that flow between the engine's stages.

Every frame carries ``pts_ns``: its start on the engine's one clock timeline, in nanoseconds
(for file input the timeline starts at 0 with the first sample). Video frame ``i`` plays the audio
samples :func:`frame_span` gives, so frames tile the audio exactly at any rate and frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from avatar.units import NS_PER_S


def frame_span(index: int, rate: int, fps: float) -> tuple[int, int]:
    """The samples ``[a, b)`` at ``rate`` that video frame ``index`` plays (from sample 0)."""
    return round(index * rate / fps), round((index + 1) * rate / fps)


@dataclass(slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] at ``sample_rate``, starting at ``pts_ns``.

    ``pts_ns`` and ``is_speech`` are set on the engine's output (a frame's audio: its time, and
    whether the avatar speaks in it). Audio pushed into the engine leaves both at their defaults:
    it plays right after the audio pushed before it (see :mod:`avatar.engine.engine`).
    """

    samples: np.ndarray  # (n,) float32
    sample_rate: int
    pts_ns: int = 0
    is_speech: bool = True

    @property
    def duration_ns(self) -> int:
        return len(self.samples) * NS_PER_S // self.sample_rate

    @property
    def end_ns(self) -> int:
        return self.pts_ns + self.duration_ns


class SpeechEventKind(Enum):
    START = "speech_start"
    END = "speech_end"


@dataclass(slots=True)
class SpeechEvent:
    """The VAD's decision that speech started or ended at ``pts_ns``."""

    kind: SpeechEventKind
    pts_ns: int


@dataclass(slots=True)
class MotionFrame:
    """Face motion for one video frame, covering audio time ``pts_ns``.

    ``blendshapes`` follow :data:`avatar.motion.channels.BLENDSHAPES` (ARKit names) and
    ``visemes`` follow :data:`avatar.motion.channels.VISEMES` (15 Oculus visemes, summing to 1).
    Head pose and blinks are not predicted from audio; the idle animator fills them later.
    """

    index: int
    pts_ns: int
    blendshapes: np.ndarray  # (n_blendshapes,) float32 in [0, 1]
    visemes: np.ndarray  # (n_visemes,) float32 probabilities
    head_pose: np.ndarray = field(
        default_factory=lambda: np.zeros(6, np.float32)
    )  # yaw pitch roll (rad), tx ty tz
    blink: float = 0.0  # 0 open .. 1 closed
    is_speech: bool = True
    talking: float = 0.0  # 0 at rest .. 1 while talking: a photo's resting smile relaxes


@dataclass(slots=True)
class FrameTiming:
    """Where one output frame spent its time, on the engine clock (ns).

    The engine fills the fields; ``stages`` and ``starts`` are written only by an observer that
    times the stages (``avatar.profile.Profiler``), ``analysis`` comes from its stage spans.
    """

    source_index: int  # input frame it shows (-1: an idle filler with no input behind it)
    audio_in_ns: int  # when the frame's first audio sample was pushed (filler: its tick)
    ready_ns: int  # when its job left the analysis
    due_ns: int  # its tick
    render_start_ns: int
    render_end_ns: int
    emit_ns: int = 0  # handed to the consumer
    late: int = 0  # ticks missed just before this frame (the late-frame policy)
    skipped: int = 0  # frames skipped just before this frame
    inbox_wait_ns: int = 0  # profiling: the last input block's wait before its analysis
    analysis: dict[str, int] = field(default_factory=dict)  # profiling: analysis work (ns)
    stages: dict[str, int] = field(default_factory=dict)  # profiling: work per stage (ns)
    starts: dict[str, int] = field(default_factory=dict)  # profiling: when timed stages began

    @property
    def latency_ns(self) -> int:
        """Audio pushed -> frame carrying it handed out."""
        return self.emit_ns - self.audio_in_ns


@dataclass(slots=True)
class VideoFrame:
    """A rendered RGB image and the audio that plays with it; for a video encoder, the image's
    I420 planes too (:mod:`avatar.render.i420`, made in the render hop)."""

    index: int
    pts_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    audio: AudioChunk | None = None
    motion: MotionFrame | None = None
    events: list[SpeechEvent] = field(default_factory=list)  # decided since the last frame
    timing: FrameTiming | None = None  # set by the real-time engine
    i420: np.ndarray | None = None  # (i420_size(H, W),) uint8 Y, U, V; engines built with i420
