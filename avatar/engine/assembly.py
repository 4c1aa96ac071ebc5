"""Stage 4, frame assembly: the output timeline, motion and speech events -> one job per frame.

Frame ``g`` plays output samples :func:`~avatar.frames.frame_span` ``(g)``. Its job (its audio, its
motion or none, the events decided since the previous job, when its audio arrived) is handed to
the tick loop as soon as it is complete: when its motion frame is there, or, while the model
sleeps, once the audio that the model would have needed has arrived (``delay`` output samples
after the frame), so every frame leaves with the same delay and a waking model makes no gap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from avatar.engine.front import AudioBlock
from avatar.frames import AudioChunk, MotionFrame, SpeechEvent, frame_span
from avatar.observe import NULL_OBSERVER, Observer
from avatar.units import NS_PER_S


@dataclass(slots=True)
class FrameJob:
    """Everything needed to render and send frame ``index``."""

    index: int
    audio: AudioChunk  # exactly this frame's samples at the output rate
    motion: MotionFrame | None  # None: the model was asleep (silence), the avatar idles
    audio_in_ns: int  # engine-clock time the frame's first sample was pushed
    events: list[SpeechEvent] = field(default_factory=list)
    analysis: dict[str, int] = field(default_factory=dict)  # profiling: analysis work (ns)
    inbox_wait_ns: int = 0  # profiling: the last input block's wait before its analysis


class AudioSlicer:
    """Cuts the output audio into per-frame pieces (:func:`~avatar.frames.frame_span`), so
    frames tile the audio exactly; audio before the frame taken last is released."""

    def __init__(self, rate: int, fps: float) -> None:
        self.rate, self.fps = rate, fps
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self.samples_in = 0

    def push(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
        self.samples_in += len(samples)

    def bounds(self, index: int) -> tuple[int, int]:
        return frame_span(index, self.rate, self.fps)

    def take(self, index: int) -> AudioChunk:
        """The audio of frame ``index`` (zero-padded past the end)."""
        a, b = self.bounds(index)
        lo, hi = a - self._buf_start, b - self._buf_start
        piece = self._buf[max(lo, 0) : max(hi, 0)]
        if len(piece) < b - a:
            piece = np.concatenate([piece, np.zeros(b - a - len(piece), np.float32)])
        if lo > 0:
            self._buf = self._buf[lo:]
            self._buf_start = a
        return AudioChunk(piece, self.rate, a * NS_PER_S // self.rate)


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


class FrameAssembler:
    """Output audio + motion + events -> :class:`FrameJob`; see the module docstring."""

    def __init__(
        self, rate: int, fps: float, delay: int, observer: Observer = NULL_OBSERVER
    ) -> None:
        self.rate, self.fps, self.delay, self.observer = rate, fps, delay, observer
        self.slicer = AudioSlicer(rate, fps)
        self._arrivals = _ArrivalLog()
        self._motion: dict[int, MotionFrame] = {}
        self._events: list[SpeechEvent] = []
        self.next_frame = 0

    def push(
        self,
        block: AudioBlock,
        motion: list[MotionFrame],
        events: list[SpeechEvent],
        running_from: int | None,
        inbox_wait_ns: int = 0,
    ) -> list[FrameJob]:
        """Add a block, the motion frames and events it produced; ``running_from`` is the first
        frame of the running model (None: asleep). Returns the jobs that became complete."""
        self.slicer.push(block.samples)
        self._arrivals.add(self.slicer.samples_in, block.arrival_ns)
        self._add(motion, events)
        return self._ready(running_from, final=False, inbox_wait_ns=inbox_wait_ns)

    def finish(self, motion: list[MotionFrame], events: list[SpeechEvent]) -> list[FrameJob]:
        """End of input: every remaining frame up to the end of the audio."""
        self._add(motion, events)
        return self._ready(None, final=True)

    def clear(self) -> int:
        """Interruption: motion and events not yet handed out are dropped; the next frame starts
        at the next frame boundary. Returns the silence (output samples) that reaches it."""
        self._motion.clear()
        self._events.clear()
        self._arrivals.clear()
        end = self.slicer.samples_in
        g = self._first_frame_from(end, self.next_frame)
        self.next_frame = g
        return self.slicer.bounds(g)[0] - end

    def _add(self, motion: list[MotionFrame], events: list[SpeechEvent]) -> None:
        for f in motion:
            if f.index >= self.next_frame:
                self._motion[f.index] = f
        self._events.extend(events)

    def _ready(
        self, running_from: int | None, final: bool, inbox_wait_ns: int = 0
    ) -> list[FrameJob]:
        jobs: list[FrameJob] = []
        end = self.slicer.samples_in
        while True:
            g = self.next_frame
            a, b = self.slicer.bounds(g)
            if final and a >= end:
                break
            motion = self._motion.pop(g, None)
            if motion is None and not final:
                if running_from is not None and g >= running_from:
                    break  # the model is running: wait for its frame
                if end < b + self.delay:
                    break
            jobs.append(self._job(g, a, motion, inbox_wait_ns))
            self.next_frame += 1
        self._arrivals.forget_before(self.slicer.bounds(self.next_frame)[0])
        return jobs

    def _job(self, g: int, first_sample: int, motion: MotionFrame | None, wait: int) -> FrameJob:
        if motion is not None:
            motion.is_speech = True
        events, self._events = self._events, []
        arrival = self._arrivals.arrival(first_sample)
        return FrameJob(g, self.slicer.take(g), motion, arrival, events, self.observer.take(), wait)

    def _first_frame_from(self, sample: int, g: int = 0) -> int:
        """The first frame (from ``g`` on) that starts at or after ``sample``."""
        while self.slicer.bounds(g)[0] < sample:
            g += 1
        return g
