"""Stage 3, motion: analysis-rate audio -> one :class:`MotionFrame` per video frame, while awake.

The speech gate decides when the model runs, at points inside a block. On *wake* a fresh streaming
state starts at a frame boundary up to ``preroll_ms`` before the wake point, and the audio since
then is replayed into it (its causal context), so the onset of a word is animated. Awake, the audio
goes to the model; on *sleep* the model's last frames are flushed and its state dropped. Frames
are indexed on the output frame grid (:func:`~avatar.frames.frame_span`), whatever run made them.

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
        lead_s: float = 0.0,
    ) -> None:
        model_rate = int(backend.meta["features"]["sample_rate"])
        if model_rate != analysis_rate:
            raise ModelError(f"the motion model reads {model_rate} Hz, the engine {analysis_rate}")
        self.backend, self.fps, self.rate, self.observer = backend, fps, rate, observer
        self.lead_s = lead_s  # how far the mouth runs ahead of its sound (MotionStreamer)
        self.factor = rate // analysis_rate
        self.delay = model_delay_samples(backend, fps, rate, analysis_rate, lead_s)
        self.preroll = analysis_rate * preroll_ms // 1000
        self._history = np.zeros(0, np.float32)  # the last `preroll` analysis samples
        self._streamer: MotionStreamer | None = None  # the running model (None: asleep)
        self._first = 0  # the output frame the running model's frame 0 is
        self.samples_in = 0  # analysis samples so far
        self.model_pushes = 0  # blocks that ran the model (the silence-cost test counts them)

    @property
    def running_from(self) -> int | None:
        """The first frame of the running model, or None while it sleeps."""
        return self._first if self._streamer is not None else None

    def push(self, samples: np.ndarray, switches: list[tuple[int, bool]]) -> list[MotionFrame]:
        """A block of analysis audio and the gate's switches in it: ``(offset, awake)`` pairs,
        the model runs from a ``True`` offset (after its pre-roll) and stops at a ``False`` one."""
        x = np.ascontiguousarray(samples, np.float32)
        frames: list[MotionFrame] = []
        pos = 0
        for offset, awake in switches:
            frames += self._feed(x[pos:offset])
            pos = offset
            if awake and self._streamer is None:
                frames += self._wake()
            elif not awake:
                frames += self.finish()
        return frames + self._feed(x[pos:])

    def finish(self) -> list[MotionFrame]:
        """Sleep (or end of input): the running model's remaining frames."""
        if self._streamer is None:
            return []
        frames = self._shift(self._streamer.flush())
        self._streamer = None
        return frames

    def clear(self) -> None:
        """Interruption: the model's state and the pre-roll are dropped."""
        self._streamer = None
        self._history = np.zeros(0, np.float32)

    def _feed(self, x: np.ndarray) -> list[MotionFrame]:
        """Audio up to the next switch: to the model if it runs, and to the pre-roll."""
        frames: list[MotionFrame] = []
        if len(x) and self._streamer is not None:
            frames = self._shift(self._streamer.push(x))
            self.model_pushes += 1
        self._history = np.concatenate([self._history, x])[-self.preroll :]
        self.samples_in += len(x)
        return frames

    def _wake(self) -> list[MotionFrame]:
        """Start the model at a frame boundary within the pre-roll; replay the audio since."""
        start = self.samples_in - len(self._history)  # analysis index of the pre-roll's start
        first = self._first_frame_from(start * self.factor)
        skip = frame_span(first, self.rate, self.fps)[0] // self.factor - start
        self._streamer = MotionStreamer(
            self.backend, self.fps, observer=self.observer, lead_s=self.lead_s
        )
        self._first = first
        self.model_pushes += 1
        return self._shift(self._streamer.push(self._history[skip:]))

    def _shift(self, frames: list[MotionFrame]) -> list[MotionFrame]:
        """Streamer frame ``i`` -> output frame ``first + i`` (and its timestamp)."""
        offset_ns = round(self._first * NS_PER_S / self.fps)
        for f in frames:
            f.index += self._first
            f.pts_ns += offset_ns
        return frames

    def _first_frame_from(self, sample: int) -> int:
        """The first frame starting at or after output ``sample`` on an analysis sample."""
        g = int(sample * self.fps / self.rate)
        while True:
            a = frame_span(g, self.rate, self.fps)[0]
            if a >= sample and a % self.factor == 0:
                return g
            g += 1


def _probe(
    backend: InferenceBackend, fps: float, rate: int, analysis_rate: int, lead_s: float
) -> int:
    streamer = MotionStreamer(backend, fps, lead_s=lead_s)
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
    lead_s: float = 0.0,
) -> int:
    """Output samples that must follow a frame's last sample before the model emits the frame.

    Measured once per backend by pushing silence 1 ms at a time (look-ahead, the mouth's lead
    and token rounding included; the front's decimator holds nothing back)."""
    cache = backend.meta.setdefault("_engine_delay_samples", {})  # per backend, per timeline
    key = (fps, rate, analysis_rate, lead_s)
    if key not in cache:
        cache[key] = _probe(backend, fps, rate, analysis_rate, lead_s)
    return int(cache[key])
