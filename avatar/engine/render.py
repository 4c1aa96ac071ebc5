"""Stage 5, render: a frame job (or nothing: idle) -> a :class:`VideoFrame` with its audio.

The idle animator adds blinks, breathing and head sway on top of the job's motion (or of a
closed, resting mouth when the model slept). In silence only every ``idle_render_every``-th frame
is drawn (blinks always); the frames between repeat the last image. With ``sync_marker`` a white
square in the top-left corner marks frames whose own audio is loud (A/V sync checks). With
``i420`` (a video encoder takes the frames) :meth:`RenderStage.colour` adds the image's I420 planes
after the marker; a repeated image reuses its planes.
"""

from __future__ import annotations

import logging

import numpy as np

from avatar.config import EngineConfig
from avatar.engine.assembly import FrameJob
from avatar.frames import AudioChunk, MotionFrame, VideoFrame
from avatar.motion.channels import BLENDSHAPES, VISEMES
from avatar.motion.idle import IdleAnimator
from avatar.render.base import Renderer
from avatar.render.i420 import rgb_to_i420

log = logging.getLogger("avatar.engine")
MARKER_RMS, MARKER_PX = 0.05, 24


class RenderStage:
    """Motion + idle animation -> image; see the module docstring."""

    def __init__(
        self,
        renderer: Renderer,
        cfg: EngineConfig,
        rate: int,
        fps: float,
        idle_seed: int = 0,
        *,
        i420: bool = False,
    ) -> None:
        self.renderer, self.cfg, self.rate, self.fps, self.i420 = renderer, cfg, rate, fps, i420
        self._planes: tuple[np.ndarray, np.ndarray] | None = None  # the last (image, its I420)
        self.idle = IdleAnimator(idle_seed)
        self._last: VideoFrame | None = None
        self.rendered = 0  # images drawn (the rest repeat the last one)
        self.faults: list[str] = []  # renderer failures not yet reported
        self.faults_total = 0

    def render(self, job: FrameJob | None, index: int, pts: int) -> VideoFrame:
        """Output frame ``index`` at ``pts`` showing ``job`` (None: an idle filler)."""
        motion = self.idle.apply(_motion_of(job, index, pts))
        image = self._reused_image(motion, index)
        if image is None:
            image = self._draw(motion, index, pts)
            self.rendered += 1
        audio = job.audio if job is not None else _silence(self.rate, self.fps)
        if self.cfg.sync_marker:
            image = mark_loud(image, audio.samples)
        audio = AudioChunk(audio.samples, audio.sample_rate, pts, motion.is_speech)
        events = job.events if job is not None else []
        frame = VideoFrame(index, pts, image, audio, motion, events)
        self._last = frame
        return frame

    def colour(self, frame: VideoFrame) -> None:
        """Give ``frame`` its image's I420 planes (the same planes while the image repeats)."""
        last = self._planes
        if last is not None and last[0] is frame.image:
            frame.i420 = last[1]
        else:
            frame.i420 = rgb_to_i420(frame.image)
            self._planes = (frame.image, frame.i420)

    def _draw(self, motion: MotionFrame, index: int, pts: int) -> np.ndarray:
        """The renderer's image; if it fails, the idle avatar (or the last image, or grey when
        the renderer cannot draw at all): a session never dies of a renderer fault."""
        try:
            return self.renderer.render(motion)
        except Exception as exc:
            log.error("renderer failed: %r (frame %d shows the idle avatar)", exc, index,
                      exc_info=exc)  # fmt: skip
            self.faults.append("renderer failed; the avatar shows its idle face")
            self.faults_total += 1
        try:
            return self.renderer.render(_motion_of(None, index, pts))
        except Exception:
            if self._last is not None:
                return self._last.image
            size = self.renderer.size
            return np.full((size, size, 3), 128, np.uint8)

    def _reused_image(self, motion: MotionFrame, index: int) -> np.ndarray | None:
        """In silence, render every ``idle_render_every``-th frame (blinks always)."""
        last = self._last
        if (
            last is None
            or motion.is_speech
            or last.motion is None
            or last.motion.is_speech
            or motion.blink > 0
            or last.motion.blink > 0
            or index % self.cfg.idle_render_every == 0
        ):
            return None
        return last.image


def _motion_of(job: FrameJob | None, index: int, pts: int) -> MotionFrame:
    src = job.motion if job is not None else None
    if src is None:
        rest = np.zeros(len(BLENDSHAPES), np.float32)
        return MotionFrame(index, pts, rest, np.zeros(len(VISEMES), np.float32), is_speech=False)
    return MotionFrame(index, pts, src.blendshapes, src.visemes, is_speech=True)


def mark_loud(image: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """A/V check overlay: a white top-left square on a frame whose own audio is loud."""
    if len(samples) and float(np.sqrt(np.mean(samples**2))) > MARKER_RMS:
        image = image.copy()
        image[:MARKER_PX, :MARKER_PX] = 255
    return image


def _silence(rate: int, fps: float) -> AudioChunk:
    return AudioChunk(np.zeros(round(rate / fps), np.float32), rate, 0, False)
