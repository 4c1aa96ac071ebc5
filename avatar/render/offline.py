"""``avatar render``: speech file -> talking-avatar mp4, through the real-time engine's contract."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avatar.audio.io import iter_audio
from avatar.clock import FakeClock
from avatar.config import Config
from avatar.engine.build import build_engine
from avatar.engine.engine import AvatarEngine
from avatar.face.image import save_rgb
from avatar.frames import AudioChunk
from avatar.render.video import Mp4Writer
from avatar.tasks import cancel, spawn

OUTPUT_RATE = 48000


def render_file(
    audio: Path, output: Path, cfg: Config, frames_dir: Path | None = None, progress: bool = True
) -> str:
    """Write ``output`` (and PNGs into ``frames_dir``); returns a one-line summary.

    The file goes through the real-time engine's contract (``push_audio``, frames out) on a
    :class:`~avatar.clock.FakeClock` that jumps instead of waiting; offline, idle frames are all
    rendered (no half-rate idle) and nothing is skipped."""
    engine_cfg = cfg.engine.model_copy(update={"idle_render_every": 1})
    cfg = cfg.model_copy(update={"engine": engine_cfg})
    engine = build_engine(cfg, FakeClock(), realtime=False)
    reader = iter_audio(audio, rate=OUTPUT_RATE, block_s=1.0)
    if frames_dir:
        frames_dir.mkdir(parents=True, exist_ok=True)
    total = reader.info.duration_s
    bar = tqdm(total=round(total, 1) if total else None, unit="s", desc=audio.name,
               disable=not progress)  # fmt: skip
    size, fps = engine.renderer.size, cfg.motion.fps
    with Mp4Writer(output, fps, size, OUTPUT_RATE) as writer, bar:
        seconds = asyncio.run(_run(engine, reader, writer, frames_dir, bar))
    return (
        f"{output}: {writer.frames} frames, {size}x{size} at {fps:g} fps, "
        f"{seconds:.2f} s of audio, avatar {cfg.render.avatar!r}, renderer {engine.renderer.name}"
    )


async def _run(
    engine: AvatarEngine, reader: Iterable[np.ndarray], writer: Mp4Writer,
    frames_dir: Path | None, bar: tqdm,
) -> float:  # fmt: skip
    pushed = 0

    async def produce() -> None:
        nonlocal pushed
        try:
            for block in reader:
                engine.push_audio(AudioChunk(block, OUTPUT_RATE, 0))
                pushed += len(block)
                await engine.wait_for_room(max_pending_s=2.0)  # memory stays flat for long files
        finally:
            engine.end_input()  # also when decoding fails: the frames so far end the file

    producer = spawn(produce(), "render-file-input")
    try:
        async for frame in engine:
            writer.write(frame)
            if frames_dir:
                save_rgb(frames_dir / f"{frame.index:06d}.png", frame.image)
            bar.update(round(1 / engine.fps, 3))
    finally:
        await cancel(producer)
        await engine.aclose()
    error = producer.exception() if producer.done() and not producer.cancelled() else None
    if error is not None:
        raise error
    return pushed / OUTPUT_RATE
