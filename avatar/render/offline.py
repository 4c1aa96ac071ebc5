"""``avatar render``: speech file -> talking-avatar mp4, through the streaming pipeline stages."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from avatar.audio.io import iter_audio
from avatar.config import Config
from avatar.face.image import save_rgb
from avatar.frames import VideoFrame
from avatar.motion.runtime import load_motion_backend
from avatar.pipeline.stages import AvatarPipeline
from avatar.render.factory import load_renderer
from avatar.render.video import Mp4Writer

OUTPUT_RATE = 48000


def render_file(
    audio: Path, output: Path, cfg: Config, frames_dir: Path | None = None, progress: bool = True
) -> str:
    """Write ``output`` (and PNGs into ``frames_dir``); returns a one-line summary."""
    renderer = load_renderer(cfg.render)
    backend = load_motion_backend(cfg.motion)
    fps = cfg.motion.fps
    pipeline = AvatarPipeline(backend, renderer, fps, OUTPUT_RATE, cfg.render.idle_seed)
    reader = iter_audio(audio, rate=OUTPUT_RATE, block_s=1.0)
    if frames_dir:
        frames_dir.mkdir(parents=True, exist_ok=True)
    total = reader.info.duration_s
    bar = tqdm(total=round(total, 1) if total else None, unit="s", desc=audio.name,
               disable=not progress)  # fmt: skip
    with Mp4Writer(output, fps, renderer.size, OUTPUT_RATE) as writer, bar:

        def emit(frames: list[VideoFrame]) -> None:
            for f in frames:
                writer.write(f)
                if frames_dir:
                    save_rgb(frames_dir / f"{f.index:06d}.png", f.image)

        for block in reader:
            emit(pipeline.push_audio(block))
            bar.update(round(len(block) / OUTPUT_RATE, 3))
        emit(pipeline.flush())
    seconds = pipeline.slicer.samples_in / OUTPUT_RATE
    return (
        f"{output}: {writer.frames} frames, {renderer.size}x{renderer.size} at {fps:g} fps, "
        f"{seconds:.2f} s of audio, avatar {cfg.render.avatar!r}, renderer {renderer.name}"
    )
