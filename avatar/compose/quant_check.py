"""How close an INT8 model runs to its float32 original, and how fast, on real speech.

Both models are driven the way the engine drives them: the motion model through
:class:`~avatar.motion.stream.MotionStreamer` in 40 ms pushes, the GAN generator through
:class:`~avatar.render.gan.GanRenderer` on the motion of real speech. Used by
``scripts/quantize_models.py`` (the numbers in the model cards) and ``tests/test_quantize.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.backends.quantize import RecordingBackend
from avatar.face.store import AvatarAssets
from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX
from avatar.motion.stream import MotionStreamer
from avatar.render.gan import GanRenderer

JAW = BLENDSHAPE_INDEX["jawOpen"]
PUSH = 640  # samples per push: 40 ms at 16 kHz, what a WebRTC session delivers in two packets
CLOSED = 0.1  # jawOpen at or under which the lips count as closed (the model card's P/B/M test)


def stream_motion(
    backend: InferenceBackend, audio: np.ndarray, fps: float = 25.0, lead_s: float = 0.04
) -> list[MotionFrame]:
    """Every frame of ``audio`` (16 kHz) streamed in 40 ms pushes, as a session does."""
    streamer = MotionStreamer(backend, fps, lead_s=lead_s)
    frames: list[MotionFrame] = []
    for i in range(0, len(audio), PUSH):
        frames += streamer.push(audio[i : i + PUSH])
    return frames + streamer.flush()


@dataclass(frozen=True, slots=True)
class JawAgreement:
    """``jawOpen`` of a model against its reference, frame by frame."""

    frames: int
    r: float  # correlation
    max_abs: float
    mean_abs: float
    closed_agree: float  # share of frames where both or neither are closed (jawOpen <= 0.1)

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 5) for k, v in asdict(self).items()}


def jaw_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> JawAgreement:
    """Compare per-clip ``jawOpen`` tracks (F,) of two models."""
    a, b = np.concatenate(reference), np.concatenate(other)
    diff = np.abs(a - b)
    closed_agree = float(np.mean((a <= CLOSED) == (b <= CLOSED)))
    r = float(np.corrcoef(a, b)[0, 1])
    return JawAgreement(len(a), r, float(diff.max()), float(diff.mean()), closed_agree)


def jaw_track(frames: Sequence[MotionFrame]) -> np.ndarray:
    return np.array([f.blendshapes[JAW] for f in frames], np.float32)


def generator_feeds(
    assets: AvatarAssets, backend: InferenceBackend, frames: Sequence[MotionFrame],
    size: int, every: int = 2,
) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The generator's actual inputs (``warped``, ``sketch``, ``code``) when the GAN renderer
    draws ``frames`` at ``size`` px: every ``every``-th call's."""
    recorder = RecordingBackend(backend, every=every)
    renderer = GanRenderer(assets, recorder, size)
    for frame in frames:
        renderer.render(frame)
    return recorder.feeds


@dataclass(frozen=True, slots=True)
class RenderAgreement:
    """Rendered frames of one generator against another's."""

    frames: int
    psnr_frame: float  # dB over whole frames
    psnr_mouth: float  # dB over the box the generator pastes into
    mean_abs_mouth: float  # 0-255
    max_abs: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


def render_agreement(
    assets: AvatarAssets, reference: InferenceBackend, other: InferenceBackend,
    frames: Sequence[MotionFrame], size: int,
) -> RenderAgreement:  # fmt: skip
    """Render ``frames`` with both generators and compare the pictures."""
    ref_renderer, renderer = GanRenderer(assets, reference, size), GanRenderer(assets, other, size)
    x0, y0, x1, y1 = ref_renderer.paste_box
    sq_frame = sq_mouth = abs_mouth = peak = 0.0
    for frame in frames:
        diff = renderer.render(frame).astype(np.float32) - ref_renderer.render(frame)
        mouth = diff[y0:y1, x0:x1]
        sq_frame += float((diff**2).mean())
        sq_mouth += float((mouth**2).mean())
        abs_mouth += float(np.abs(mouth).mean())
        peak = max(peak, float(np.abs(diff).max()))
    n = max(len(frames), 1)
    return RenderAgreement(len(frames), psnr(sq_frame / n), psnr(sq_mouth / n), abs_mouth / n, peak)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio of 8-bit pictures with mean squared error ``mse`` (capped)."""
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def time_calls(
    backends: Mapping[str, InferenceBackend], feed: dict[str, np.ndarray],
    rounds: int = 20, calls: int = 20,
) -> dict[str, float]:  # fmt: skip
    """Median milliseconds per ``run(feed)`` of each backend, the backends taking turns round
    by round (so a noisy machine slows them alike)."""
    samples: dict[str, list[float]] = {name: [] for name in backends}
    for backend in backends.values():
        backend.run(feed)  # first call binds buffers
    for _ in range(rounds):
        for name, backend in backends.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                backend.run(feed)
            samples[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {name: round(float(np.median(v)), 4) for name, v in samples.items()}
