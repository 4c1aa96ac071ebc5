"""Stage 3, motion: analysis-rate audio -> one :class:`MotionFrame` per video frame, while awake.

The speech gate decides when the model runs. On *wake* a fresh streaming state starts at a frame
boundary up to ``preroll_ms`` before the waking block, and the audio since then is replayed into it
(its causal context), so the onset of a word is animated. Awake, every block goes to the model; on
*sleep* the model's last frames are flushed and its state dropped. Frames are indexed on the
output frame grid (:func:`~avatar.frames.frame_span`), whatever run produced them.

:func:`model_delay_samples` is how long (in output samples) a frame's audio must be followed by
more audio before the model can emit it (look-ahead and token rounding), measured on the real
model: the frame assembly gives every frame that delay, awake or not, so speech onsets make no gap.
"""

from __future__ import annotations

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.errors import ModelError
from avatar.frames import MotionFrame, frame_span
from avatar.motion.stream import MotionStreamer
from avatar.observe import NULL_OBSERVER, Observer
from avatar.units import ANALYSIS_RATE, NS_PER_S, OUTPUT_RATE


class _Run:
    """One awake period: a fresh streaming state whose frame 0 is output frame ``first``."""

    def __init__(
        self, backend: InferenceBackend, fps: float, first: int, observer: Observer
    ) -> None:
        self.streamer = MotionStreamer(backend, fps, observer=observer)
        self.first = first
        self.offset_ns = round(first * NS_PER_S / fps)

    def push(self, samples: np.ndarray) -> list[MotionFrame]:
        return self._shift(self.streamer.push(samples))

    def flush(self) -> list[MotionFrame]:
        return self._shift(self.streamer.flush())

    def _shift(self, frames: list[MotionFrame]) -> list[MotionFrame]:
        for f in frames:
            f.index += self.first
            f.pts_ns += self.offset_ns
        return frames


class MotionStage:
    """Pre-roll + streamer; see the module docstring."""

    def __init__(
        self,
        backend: InferenceBackend,
        fps: float,
        rate: int = OUTPUT_RATE,
        analysis_rate: int = ANALYSIS_RATE,
        preroll_ms: int = 400,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        model_rate = int(backend.meta["features"]["sample_rate"])
        if model_rate != analysis_rate:
            raise ModelError(f"the motion model reads {model_rate} Hz, the engine {analysis_rate}")
        self.backend, self.fps, self.rate, self.observer = backend, fps, rate, observer
        self.factor = rate // analysis_rate
        self.delay = model_delay_samples(backend, fps, rate, analysis_rate)
        self.preroll = analysis_rate * preroll_ms // 1000
        self._history = np.zeros(0, np.float32)  # the last `preroll` analysis samples
        self._run: _Run | None = None
        self.samples_in = 0  # analysis samples so far
        self.model_pushes = 0  # blocks that ran the model (the silence-cost test counts them)

    @property
    def running_from(self) -> int | None:
        """The first frame of the running model, or None while it sleeps."""
        return self._run.first if self._run is not None else None

    def push(self, samples: np.ndarray, wake: bool, sleep: bool) -> list[MotionFrame]:
        """A block of analysis audio with the gate's decisions for it."""
        x = np.ascontiguousarray(samples, np.float32)
        frames: list[MotionFrame] = []
        if wake and self._run is None:
            frames = self._wake(x)
        elif self._run is not None:
            frames = self._run.push(x)
            self.model_pushes += 1
            if sleep:
                frames += self.finish()
        self._history = np.concatenate([self._history, x])[-self.preroll :]
        self.samples_in += len(x)
        return frames

    def finish(self) -> list[MotionFrame]:
        """Sleep (or end of input): the running model's remaining frames."""
        if self._run is None:
            return []
        frames = self._run.flush()
        self._run = None
        return frames

    def clear(self) -> None:
        """Interruption: the model's state and the pre-roll are dropped."""
        self._run = None
        self._history = np.zeros(0, np.float32)

    def _wake(self, x: np.ndarray) -> list[MotionFrame]:
        context = np.concatenate([self._history, x]) if len(self._history) else x
        start = self.samples_in - len(self._history)  # analysis index of context[0]
        first = self._first_frame_from(start * self.factor)
        skip = frame_span(first, self.rate, self.fps)[0] // self.factor - start
        self._run = _Run(self.backend, self.fps, first, self.observer)
        self.model_pushes += 1
        return self._run.push(context[skip:])

    def _first_frame_from(self, sample: int) -> int:
        """The first frame starting at or after output ``sample`` on an analysis sample."""
        g = int(sample * self.fps / self.rate)
        while True:
            a = frame_span(g, self.rate, self.fps)[0]
            if a >= sample and a % self.factor == 0:
                return g
            g += 1


def _probe(backend: InferenceBackend, fps: float, rate: int, analysis_rate: int) -> int:
    streamer = MotionStreamer(backend, fps)
    factor = rate // analysis_rate
    step, pushed, worst, frames = analysis_rate // 1000, 0, 0, 0
    while frames < 25:
        pushed += step
        for f in streamer.push(np.zeros(step, np.float32)):
            worst = max(worst, pushed * factor - frame_span(f.index, rate, fps)[1])
            frames += 1
    return worst


def model_delay_samples(
    backend: InferenceBackend,
    fps: float,
    rate: int = OUTPUT_RATE,
    analysis_rate: int = ANALYSIS_RATE,
) -> int:
    """Output samples that must follow a frame's last sample before the model emits the frame.

    Measured once per backend by pushing silence 1 ms at a time (look-ahead and token rounding
    included; the front's decimator holds nothing back)."""
    cache = backend.meta.setdefault("_engine_delay_samples", {})  # per backend, per timeline
    key = (fps, rate, analysis_rate)
    if key not in cache:
        cache[key] = _probe(backend, fps, rate, analysis_rate)
    return int(cache[key])
