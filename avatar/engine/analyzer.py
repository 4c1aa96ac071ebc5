"""Audio in -> one :class:`FrameJob` per video frame: its audio and its motion (or none: idle).

Synchronous and clock-free (the engine runs it in an executor and passes arrival times in).
The input timeline is the stream of samples pushed, at the output rate: frame ``g`` plays
samples ``AudioSlicer.bounds(g)``. A frame's job is ready once the motion model could have
produced it (:func:`model_delay_samples`, measured on the real model), whether the model runs
or not, so every frame leaves with the same delay and speech onsets cause no gaps.

Silence gate: the model only runs while there may be speech. It wakes on the first 20 ms frame
webrtcvad calls voiced and replays ``preroll_ms`` of recent audio into a fresh streaming state
(its causal context); it sleeps once the VAD has ended speech and nothing was voiced for
``sleep_after_ms``. Asleep, frames carry no motion and the avatar idles (blinks, breathing).
Speech START/END events come from the :class:`~avatar.audio.vad.VadChunker` (hysteresis) and
travel with the first job produced after they were decided; their ``pts_ns`` is on the input
timeline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from avatar.audio.resample import mono_stream
from avatar.audio.vad import VadChunker
from avatar.backend import InferenceBackend
from avatar.config import VadConfig
from avatar.frames import NS_PER_S, AudioChunk, MotionFrame, SpeechEvent
from avatar.meter import NULL_METER, StageMeter
from avatar.pipeline.stages import AudioSlicer, MotionStage

VAD_RATE = 16000


@dataclass(slots=True)
class FrameJob:
    """Everything needed to render and send source frame ``index``."""

    index: int
    audio: AudioChunk  # exactly this frame's samples at the output rate
    motion: MotionFrame | None  # None: the model was asleep (silence), the avatar idles
    audio_in_ns: int  # engine-clock time the frame's first sample was pushed
    events: list[SpeechEvent] = field(default_factory=list)
    stages: dict[str, int] = field(default_factory=dict)  # profiling: analysis work (ns)
    inbox_wait_ns: int = 0  # profiling: the last input block's wait before analysis


class _VoicedLog:
    """webrtcvad wrapper (a ``FrameClassifier``) that remembers the last voiced frame (after
    the warm-up, in which webrtcvad calls any sound voiced)."""

    def __init__(self, aggressiveness: int, warmup_frames: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self.warmup_frames = warmup_frames
        self.frames = 0
        self.last_voiced = -(10**9)

    def is_speech(self, buf: bytes, sample_rate: int) -> bool:
        voiced = bool(self._vad.is_speech(buf, sample_rate))
        if voiced and self.frames >= self.warmup_frames:
            self.last_voiced = self.frames
        self.frames += 1
        return voiced


class _ArrivalLog:
    """When each pushed block arrived: ``(end sample, arrival ns)`` in order."""

    def __init__(self) -> None:
        self._blocks: deque[tuple[int, int]] = deque()

    def add(self, end: int, arrival_ns: int) -> None:
        self._blocks.append((end, arrival_ns))

    def arrival(self, sample: int) -> int:
        """Arrival time of the block holding ``sample`` (the last block if none does)."""
        for end, t in self._blocks:
            if sample < end:
                return t
        return self._blocks[-1][1] if self._blocks else 0

    def forget_before(self, sample: int) -> None:
        while len(self._blocks) > 1 and self._blocks[0][0] <= sample:
            self._blocks.popleft()

    def clear(self) -> None:
        self._blocks.clear()


class _ModelRun:
    """One awake period of the model: a fresh streaming state whose frame 0 is ``first``."""

    def __init__(
        self, backend: InferenceBackend, fps: float, rate: int, first: int, meter: StageMeter
    ) -> None:
        self.stage = MotionStage(backend, fps, rate, meter)
        self.first = first
        self.offset_ns = round(first * NS_PER_S / fps)

    def _shift(self, frames: list[MotionFrame]) -> list[MotionFrame]:
        for f in frames:
            f.index += self.first
            f.pts_ns += self.offset_ns
        return frames

    def push(self, samples: np.ndarray) -> list[MotionFrame]:
        return self._shift(self.stage.push(samples))

    def flush(self) -> list[MotionFrame]:
        return self._shift(self.stage.flush())


def _probe(backend: InferenceBackend, fps: float, rate: int) -> int:
    stage = MotionStage(backend, fps, rate)
    slicer = AudioSlicer(rate, fps)
    step, pushed, worst, frames = rate // 1000, 0, 0, 0
    while frames < 25:
        pushed += step
        for f in stage.push(np.zeros(step, np.float32)):
            worst = max(worst, pushed - slicer.bounds(f.index)[1])
            frames += 1
    return worst


def model_delay_samples(backend: InferenceBackend, fps: float, rate: int) -> int:
    """Samples that must follow a frame's last sample before the model emits the frame.

    Measured once per backend by pushing silence 1 ms at a time (look-ahead, token rounding,
    resampler delay all included)."""
    cache = backend.meta.setdefault("_engine_delay_samples", {})  # per backend, per (fps, rate)
    if (fps, rate) not in cache:
        cache[(fps, rate)] = _probe(backend, fps, rate)
    return int(cache[(fps, rate)])


class Analyzer:
    """Output-rate mono audio -> frame jobs; see the module docstring."""

    def __init__(
        self,
        backend: InferenceBackend,
        vad: VadConfig,
        fps: float,
        rate: int = 48000,
        preroll_ms: int = 400,
        sleep_after_ms: int = 300,
    ) -> None:
        self.backend, self.fps, self.rate = backend, fps, rate
        self.delay = model_delay_samples(backend, fps, rate)
        self.preroll = rate * preroll_ms // 1000
        self._voiced = _VoicedLog(vad.aggressiveness, math.ceil(vad.warmup_ms / vad.frame_ms))
        self._vad = VadChunker(vad, VAD_RATE, classifier=self._voiced)
        self._sleep_frames = max(1, sleep_after_ms // vad.frame_ms)
        self._vad_resampler = mono_stream(VAD_RATE, rate)
        self.meter: StageMeter = NULL_METER  # the engine sets a Meter when profiling
        self.slicer = AudioSlicer(rate, fps)
        self._arrivals = _ArrivalLog()
        self._history = np.zeros(0, np.float32)  # the last `preroll` samples pushed
        self._model: _ModelRun | None = None
        self._motion: dict[int, MotionFrame] = {}
        self._events: list[SpeechEvent] = []
        self.samples_in = 0
        self.next_frame = 0
        self.model_pushes = 0  # pushes that ran the model (for the silence-cost test)

    @property
    def awake(self) -> bool:
        return self._model is not None

    def push(self, samples: np.ndarray, arrival_ns: int) -> list[FrameJob]:
        """Add output-rate mono float32 samples that arrived at ``arrival_ns``."""
        x = np.ascontiguousarray(samples, np.float32)
        if len(x) == 0:
            return []
        self.samples_in += len(x)
        self.slicer.push(x)
        self._arrivals.add(self.samples_in, arrival_ns)
        self._gate(x)
        self._history = np.concatenate([self._history, x])[-self.preroll :]
        return self._ready(final=False)

    def finish(self) -> list[FrameJob]:
        """End of input: every remaining frame up to the end of the audio."""
        self._sleep()
        for item in self._vad.flush():
            if isinstance(item, SpeechEvent):
                self._events.append(item)
        return self._ready(final=True)

    def clear(self) -> None:
        """Interruption: audio pushed so far is dropped; the next push starts a new frame."""
        self._model = None
        self._motion.clear()
        self._events.clear()
        self._arrivals.clear()
        self._history = np.zeros(0, np.float32)
        end = self.samples_in
        g = self._first_frame_from(end, self.next_frame)
        pad = self.slicer.bounds(g)[0] - end  # keep the frame grid: silence to the boundary
        self.slicer.push(np.zeros(pad, np.float32))
        self.samples_in += pad
        self.next_frame = g
        self._vad_resampler = mono_stream(VAD_RATE, self.rate)
        self._vad.reset(self._pts(self.samples_in))

    # -- the silence gate -----------------------------------------------------------------

    def _gate(self, x: np.ndarray) -> None:
        with self.meter.stage("resample"):
            y = self._vad_resampler.push(x)
        with self.meter.stage("vad"):
            for item in self._vad.push(y):
                if isinstance(item, SpeechEvent):
                    self._events.append(item)
        quiet = self._voiced.frames - self._voiced.last_voiced
        if self._model is None and quiet <= 1:
            self._wake(x)
        elif self._model is not None:
            self._collect(self._model.push(x))
            self.model_pushes += 1
            if not self._vad.speaking and quiet > self._sleep_frames:
                self._sleep()

    def _wake(self, x: np.ndarray) -> None:
        context = np.concatenate([self._history, x])
        start = self.samples_in - len(context)
        first = self._first_frame_from(start)
        skip = self.slicer.bounds(first)[0] - start
        self._model = _ModelRun(self.backend, self.fps, self.rate, first, self.meter)
        self._collect(self._model.push(context[skip:]))
        self.model_pushes += 1

    def _sleep(self) -> None:
        if self._model is not None:
            self._collect(self._model.flush())
            self._model = None

    def _collect(self, frames: list[MotionFrame]) -> None:
        for f in frames:
            if f.index >= self.next_frame:
                self._motion[f.index] = f

    # -- jobs -----------------------------------------------------------------------------

    def _ready(self, final: bool) -> list[FrameJob]:
        jobs: list[FrameJob] = []
        while True:
            g = self.next_frame
            a, b = self.slicer.bounds(g)
            if final and a >= self.samples_in:
                break
            motion = self._motion.pop(g, None)
            if motion is None and not final:
                if self._model is not None and g >= self._model.first:
                    break  # the model is running: wait for its frame
                if self.samples_in < b + self.delay:
                    break
            jobs.append(self._job(g, a, motion))
            self.next_frame += 1
        self._arrivals.forget_before(self.slicer.bounds(self.next_frame)[0])
        return jobs

    def _job(self, g: int, first_sample: int, motion: MotionFrame | None) -> FrameJob:
        if motion is not None:
            motion.is_speech = True
        events, self._events = self._events, []
        arrival = self._arrivals.arrival(first_sample)
        return FrameJob(g, self.slicer.take(g), motion, arrival, events, self.meter.take())

    def _first_frame_from(self, sample: int, g: int = 0) -> int:
        """The first frame (from ``g`` on) that starts at or after ``sample``."""
        while self.slicer.bounds(g)[0] < sample:
            g += 1
        return g

    def _pts(self, sample: int) -> int:
        return sample * NS_PER_S // self.rate
