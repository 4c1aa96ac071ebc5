"""``avatar motion``: an audio file through the streaming runtime into motion.json.

The file is decoded in 1 s blocks and pushed through the same :class:`MotionStreamer` the server
uses, so memory stays bounded for any length and the result equals the streaming result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avatar.audio.io import iter_audio
from avatar.config import Config
from avatar.errors import AvatarError
from avatar.frames import MotionFrame
from avatar.motion.output import Envelope, MotionJsonWriter, frame_row, plot_motion
from avatar.motion.runtime import load_motion_backend
from avatar.motion.stream import MotionStreamer

log = logging.getLogger(__name__)
MAX_PLOT_FRAMES = 25 * 600  # plots beyond 10 minutes would be unreadable


def motion_file(
    audio: Path, output: Path, cfg: Config, plot: Path | None = None, progress: bool = True
) -> str:
    """Write ``output`` (and ``plot``) for ``audio``; returns a one-line summary."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AvatarError(
            f"cannot create the output folder {output.parent}: {e.strerror}"
        ) from None
    backend = load_motion_backend(cfg.motion.for_input(live=False))  # a file: buffered
    streamer = MotionStreamer(backend, cfg.motion.fps, lead_s=cfg.engine.lead_ms / 1000)
    rate = streamer.features.cfg.sample_rate
    reader = iter_audio(audio, rate=rate, block_s=1.0)
    env = Envelope(rate) if plot else None
    rows: list[list[float]] = []
    total = reader.info.duration_s
    with (
        MotionJsonWriter(output, cfg.motion.fps) as writer,
        tqdm(
            total=round(total, 1) if total else None,
            unit="s",
            desc=audio.name,
            disable=not progress,
        ) as bar,
    ):

        def emit(frames: list[MotionFrame]) -> None:
            writer.write(frames)
            if plot and len(rows) < MAX_PLOT_FRAMES:
                rows.extend(frame_row(f) for f in frames)

        for block in reader:
            if env:
                env.push(block)
            emit(streamer.push(block))
            bar.update(round(len(block) / rate, 3))
        emit(streamer.flush())
    warning = reader.report.warning()
    if warning:
        log.warning("%s: %s", audio, warning)
    if plot and env:
        plot_motion(
            plot,
            env,
            np.asarray(rows, np.float32),
            cfg.motion.fps,
            f"{audio.name} - {backend.name}",
        )
    seconds = streamer.samples_in / rate
    note = f" ({warning})" if warning else ""
    return (
        f"{output}: {writer.frames} frames at {cfg.motion.fps:g} fps"
        f" for {seconds:.2f} s of audio{note}"
    )
