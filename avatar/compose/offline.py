"""Offline drivers of the engine: ``avatar render`` (speech file -> mp4) and whole clips to frames.

Both push audio through the real-time engine's contract on a :class:`~avatar.clock.FakeClock`
that jumps instead of waiting: the same stages as a live session (audio front, speech gate, motion
model, frame assembly, idle animation, renderer); offline, idle frames are all rendered (no
half-rate idle) and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avatar.audio.io import iter_audio, load_audio
from avatar.backends.protocol import InferenceBackend
from avatar.clock import FakeClock
from avatar.compose.engines import build_engine
from avatar.config import Config, load_config
from avatar.engine.engine import AvatarEngine
from avatar.face.image import save_rgb
from avatar.frames import AudioChunk, VideoFrame
from avatar.render.base import Renderer
from avatar.render.video import Container, VideoWriter
from avatar.tasks import cancel, spawn
from avatar.units import OUTPUT_RATE

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.ogg"


def offline_engine(
    cfg: Config, renderer: Renderer | None = None, backend: InferenceBackend | None = None
) -> AvatarEngine:
    """An engine for a whole file: buffered input, every frame rendered, time jumps. A renderer
    or motion backend already loaded is used instead of loading the configured one."""
    engine_cfg = cfg.engine.model_copy(update={"idle_render_every": 1})
    cfg = cfg.model_copy(update={"engine": engine_cfg})
    return build_engine(cfg, FakeClock(), realtime=False, renderer=renderer, backend=backend)


def speech_frames(
    cfg: Config,
    audio: np.ndarray,
    rate: int,
    renderer: Renderer | None = None,
    backend: InferenceBackend | None = None,
) -> list[VideoFrame]:
    """Every frame the engine makes of a clip; the evaluations and the contact sheet judge
    these (``renderer``, ``backend``: already loaded ones, else the configured ones)."""
    engine = offline_engine(cfg, renderer, backend)
    blocks = [audio[i : i + rate] for i in range(0, len(audio), rate)]
    frames: list[VideoFrame] = []

    async def collect(frame: VideoFrame) -> None:
        frames.append(frame)

    asyncio.run(_run(engine, blocks, rate, collect))
    return frames


def speech_blendshapes(seconds: float, audio: Path = SAMPLE) -> np.ndarray:
    """Blendshapes (N, 16) the engine makes of the first ``seconds`` of ``audio`` (what a
    distilled GAN generator's teacher labels: :mod:`avatar.gan.distill`)."""
    cfg = load_config(None, ["render.size=128"])  # the warp renderer's pixels are not used
    clip = load_audio(audio, rate=OUTPUT_RATE)[: int(seconds * OUTPUT_RATE)]
    frames = speech_frames(cfg, clip, OUTPUT_RATE)
    return np.stack([f.motion.blendshapes for f in frames if f.motion is not None])


FrameHook = Callable[[int, int], None]  # (frames written, frames expected); may raise to stop


def render_file(
    audio: Path,
    output: Path,
    cfg: Config,
    frames_dir: Path | None = None,
    progress: bool = True,
    *,
    container: Container = "mp4",
    on_frame: FrameHook | None = None,
    renderer: Renderer | None = None,
    backend: InferenceBackend | None = None,
) -> str:
    """Write ``output`` (and PNGs into ``frames_dir``); returns a one-line summary.

    The video's side is ``render.size``: the renderer draws at that size, above the portrait's
    own too (scripts/bench_upscale.py: that beats resampling a native render, at less cost).
    ``on_frame`` is told after each frame; an exception it raises stops the render (a job's
    cancel or time limit). ``renderer``, ``backend``: already loaded ones (a worker's)."""
    engine = offline_engine(cfg, renderer, backend)
    reader = iter_audio(audio, rate=OUTPUT_RATE, block_s=1.0)
    if frames_dir:
        frames_dir.mkdir(parents=True, exist_ok=True)
    total = reader.info.duration_s
    bar = tqdm(total=round(total, 1) if total else None, unit="s", desc=audio.name,
               disable=not progress)  # fmt: skip
    size, fps = engine.renderer.size, cfg.motion.fps
    expected = math.ceil(round(total * fps, 6)) if total else 0

    async def write(frame: VideoFrame) -> None:
        writer.write(frame)
        if frames_dir:
            save_rgb(frames_dir / f"{frame.index:06d}.png", frame.image)
        bar.update(round(1 / fps, 3))
        if on_frame is not None:
            on_frame(writer.frames, max(expected, writer.frames))

    with VideoWriter(output, fps, size, OUTPUT_RATE, container) as writer, bar:
        seconds = asyncio.run(_run(engine, reader, OUTPUT_RATE, write))
    return (
        f"{output}: {writer.frames} frames, {size}x{size} at {fps:g} fps, "
        f"{seconds:.2f} s of audio, avatar {cfg.render.avatar!r}, renderer {engine.renderer.name}"
    )


Sink = Callable[[VideoFrame], Awaitable[None]]


async def _run(engine: AvatarEngine, blocks: Iterable[np.ndarray], rate: int, sink: Sink) -> float:
    """Push ``blocks`` (with backpressure: memory stays flat for long files), hand every frame
    to ``sink``; returns the seconds of audio pushed."""
    pushed = 0

    async def produce() -> None:
        nonlocal pushed
        try:
            for block in blocks:
                engine.push_audio(AudioChunk(block, rate))
                pushed += len(block)
                await engine.wait_for_room(max_pending_s=2.0)
        finally:
            engine.end_input()  # also when decoding fails: the frames so far end the file

    producer = spawn(produce(), "offline-input")
    try:
        async for frame in engine:
            await sink(frame)
    finally:
        await cancel(producer)
        await engine.aclose()
    error = producer.exception() if producer.done() and not producer.cancelled() else None
    if error is not None:
        raise error
    return pushed / rate
