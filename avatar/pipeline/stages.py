"""Small streaming stages: audio in, motion frames, rendered video frames with their audio out.

The real-time engine (and through it ``avatar render``) runs them in executors with queues between
them; ``AvatarPipeline`` composes them synchronously for the evaluations and the contact sheet.
Nothing here reads a clock: every timestamp is derived from sample counts on the stream's own
timeline.
"""

from __future__ import annotations

import numpy as np

from avatar.audio.resample import mono_stream
from avatar.backend import InferenceBackend
from avatar.frames import NS_PER_S, AudioChunk, MotionFrame, VideoFrame
from avatar.meter import NULL_METER, StageMeter
from avatar.motion.idle import IdleAnimator
from avatar.motion.stream import MotionStreamer
from avatar.render.base import Renderer


class AudioSlicer:
    """Cuts the output audio into per-frame pieces: frame ``i`` plays samples
    ``[round(i * rate / fps), round((i + 1) * rate / fps))``, so frames tile the audio exactly."""

    def __init__(self, rate: int, fps: float, start_ns: int = 0) -> None:
        self.rate, self.fps, self.start_ns = rate, fps, start_ns
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self.samples_in = 0

    def push(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
        self.samples_in += len(samples)

    def bounds(self, index: int) -> tuple[int, int]:
        return round(index * self.rate / self.fps), round((index + 1) * self.rate / self.fps)

    def take(self, index: int) -> AudioChunk:
        """The audio of frame ``index`` (zero-padded past the end); older audio is released."""
        a, b = self.bounds(index)
        lo, hi = a - self._buf_start, b - self._buf_start
        piece = self._buf[max(lo, 0) : max(hi, 0)]
        if len(piece) < b - a:
            piece = np.concatenate([piece, np.zeros(b - a - len(piece), np.float32)])
        if lo > 0:
            self._buf = self._buf[lo:]
            self._buf_start = a
        return AudioChunk(piece, self.rate, self.start_ns + a * NS_PER_S // self.rate)


class MotionStage:
    """Output-rate mono audio -> motion frames (resampled to the model rate inside).

    An integer rate ratio (48 -> 16 kHz) uses :class:`~avatar.audio.resample.Decimator`, which
    holds nothing back, so a frame is ready as soon as its look-ahead audio has arrived."""

    def __init__(
        self, backend: InferenceBackend, fps: float, input_rate: int, meter: StageMeter = NULL_METER
    ) -> None:
        self.meter = meter
        self.streamer = MotionStreamer(backend, fps, meter=meter)
        self.resampler = mono_stream(self.streamer.features.cfg.sample_rate, input_rate)

    def push(self, samples: np.ndarray) -> list[MotionFrame]:
        x = np.ascontiguousarray(samples, np.float32)
        with self.meter.stage("resample"):
            y = self.resampler.push(x)
        return self.streamer.push(y)

    def flush(self) -> list[MotionFrame]:
        return self.streamer.push(self.resampler.flush()) + self.streamer.flush()


class RenderStage:
    """Motion frame (+ idle blinks and head motion) -> video frame carrying its audio."""

    def __init__(self, renderer: Renderer, idle: IdleAnimator) -> None:
        self.renderer, self.idle = renderer, idle

    def render(self, motion: MotionFrame, audio: AudioChunk | None) -> VideoFrame:
        motion = self.idle.apply(motion)
        image = self.renderer.render(motion)
        return VideoFrame(motion.index, motion.pts_ns, image, audio, motion)


class AvatarPipeline:
    """Synchronous composition of the stages: ``push_audio`` then ``flush`` at the end."""

    def __init__(
        self,
        backend: InferenceBackend,
        renderer: Renderer,
        fps: float,
        rate: int = 48000,
        idle_seed: int = 0,
    ) -> None:
        self.fps, self.rate = fps, rate
        self.motion = MotionStage(backend, fps, rate)
        self.render = RenderStage(renderer, IdleAnimator(idle_seed))
        self.slicer = AudioSlicer(rate, fps)

    def push_audio(self, samples: np.ndarray) -> list[VideoFrame]:
        self.slicer.push(samples)
        return [self._frame(m) for m in self.motion.push(samples)]

    def flush(self) -> list[VideoFrame]:
        """Every remaining frame up to the end of the audio pushed."""
        return [self._frame(m) for m in self.motion.flush()]

    def _frame(self, motion: MotionFrame) -> VideoFrame:
        return self.render.render(motion, self.slicer.take(motion.index))
