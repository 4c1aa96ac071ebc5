"""The engine contract: ``push_audio`` / ``clear_buffer`` in, synchronized frames out.

One :class:`AvatarEngine` per session (like LiveKit's avatar ``VideoGenerator``)::

    engine.push_audio(AudioChunk(samples, rate, pts))    # any rate, mono float32
    engine.clear_buffer()                                # interruption: drop queued audio
    async for frame in engine:                           # VideoFrame: image + its audio + motion
        ...

Two tasks run per engine; neither blocks the event loop (the work runs in an executor):

- *analysis*: pushed audio -> :class:`~avatar.engine.analyzer.Analyzer` -> frame jobs, in order.
- *ticks*: every ``1/fps`` on the injected clock, take the next job, render it (idle animation on
  top), hand the frame out.

Late-frame policy (counted in :class:`EngineStats`):

- **late**: a render that overruns makes its tick late; the loop never sleeps to make up missed
  ticks, it skips them (their time slots are gone) and carries on from now. With live input the
  frames those ticks would have shown are skipped too.
- **skipped**: with live input (``max_backlog`` set), jobs waiting beyond ``max_backlog`` are
  dropped oldest first, audio included, so after a stall the stream returns to live instead of
  staying behind. With buffered input (text-to-speech, ``max_backlog=None``) nothing is skipped:
  the speech plays out at real time.
- **filled**: in real time, a tick with no job (input paused or not yet arrived) sends an idle
  frame with silent audio; the input timeline simply resumes at the next tick.
- **dropped**: a frame the consumer did not take before ``output_queue_frames`` newer ones came.

Offline (``realtime=False``, e.g. ``avatar render`` with a :class:`~avatar.clock.FakeClock`) the
ticks wait for jobs and frames wait for the consumer: nothing is filled, skipped or dropped.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from avatar.audio.resample import MonoStream, mono_stream
from avatar.clock import Clock
from avatar.config import EngineConfig
from avatar.engine.analyzer import Analyzer, FrameJob
from avatar.errors import AudioInputError
from avatar.frames import (
    NS_PER_S,
    AudioChunk,
    FrameTiming,
    MotionFrame,
    SpeechEvent,
    VideoFrame,
)
from avatar.meter import NULL_METER, Meter, StageMeter
from avatar.motion.channels import BLENDSHAPES, VISEMES
from avatar.motion.idle import IdleAnimator
from avatar.render.base import Renderer
from avatar.tasks import cancel, spawn

T = TypeVar("T")
MAX_INPUT_RATE = 384_000
MARKER_RMS, MARKER_PX = 0.05, 24
_CLEAR = object()
_END = object()


@dataclass(slots=True)
class EngineStats:
    """Counters of one engine; ``latencies_ns`` keeps the last few thousand speech frames."""

    frames: int = 0
    rendered: int = 0
    late: int = 0
    skipped: int = 0
    filled: int = 0
    dropped: int = 0
    model_frames: int = 0
    measured: int = 0  # latencies recorded so far (the deque keeps the last 5000)
    latencies_ns: deque[int] = field(default_factory=lambda: deque(maxlen=5000))


class AvatarEngine:
    """One session's engine; see the module docstring."""

    def __init__(
        self,
        analyzer: Analyzer,
        renderer: Renderer,
        clock: Clock,
        cfg: EngineConfig,
        *,
        realtime: bool = True,
        max_backlog: int | None = None,
        executor: Executor | None = None,
        idle_seed: int = 0,
        profile: bool = False,
    ) -> None:
        self.analyzer, self.renderer, self.clock, self.cfg = analyzer, renderer, clock, cfg
        self.fps, self.rate = analyzer.fps, analyzer.rate
        self.realtime, self.max_backlog, self.executor = realtime, max_backlog, executor
        self.idle = IdleAnimator(idle_seed)
        self.stats = EngineStats()
        self.profile = profile
        self.meter: StageMeter = Meter(clock) if profile else NULL_METER
        analyzer.meter = self.meter
        # live input is bounded (the oldest block is dropped); buffered input is unbounded
        self._inbox: asyncio.Queue[Any] = asyncio.Queue(
            cfg.input_queue_chunks if max_backlog is not None else 0
        )
        self._ready: deque[tuple[FrameJob, int]] = deque()
        self._job_added = asyncio.Event()
        self._out: asyncio.Queue[Any] = asyncio.Queue(cfg.output_queue_frames)
        self._resamplers: dict[int, MonoStream] = {}
        self._generation = 0  # bumped by clear_buffer: results of older work are discarded
        self._input_done = False
        self._last: VideoFrame | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._samples_pushed = self._samples_out = 0  # for wait_for_room
        self._frame_out = asyncio.Event()

    @property
    def backlog(self) -> int:
        """Frames analysed and waiting for their tick."""
        return len(self._ready)

    # -- the contract ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the analysis and tick tasks (``async for`` starts them too)."""
        if not self._tasks:
            self._tasks = [
                spawn(self._analysis(), f"engine-analysis-{id(self):x}"),
                spawn(self._ticks(), f"engine-ticks-{id(self):x}"),
            ]

    def push_audio(self, chunk: AudioChunk) -> None:
        """Queue mono float32 audio at any rate (resampled to the output rate)."""
        if self._input_done or self._closed:
            raise RuntimeError("push_audio after end_input or close")
        rate = chunk.sample_rate
        if not 1000 <= rate <= MAX_INPUT_RATE:
            raise AudioInputError(f"audio sample rate {rate} Hz is not supported (1k-384k)")
        samples = np.asarray(chunk.samples, np.float32).reshape(-1)
        if len(samples) == 0:
            return
        self._samples_pushed += len(samples) * self.rate // rate
        item = (samples, rate, self.clock.now_ns())
        if self._inbox.full():
            self._inbox.get_nowait()  # a live source outran the analysis: keep the newest
            self.stats.skipped += 1
        self._inbox.put_nowait(item)

    async def wait_for_room(self, max_pending_s: float) -> None:
        """Backpressure for a producer faster than real time (a file): wait while more than
        ``max_pending_s`` of pushed audio has not been handed out as frames."""
        limit = max_pending_s * self.rate
        while self._samples_pushed - self._samples_out > limit and not self._closed:
            self._frame_out.clear()
            await self._frame_out.wait()

    def end_input(self) -> None:
        """No more audio: the frames of what was pushed are produced, then iteration ends."""
        if not self._input_done:
            self._inbox.put_nowait(_END)
            self._input_done = True

    def clear_buffer(self) -> None:
        """Interruption: audio queued or not yet played is dropped; the avatar goes idle."""
        self._generation += 1
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if item is _END:
                self._input_done = False
        self._ready.clear()
        self._samples_out = self._samples_pushed
        self._inbox.put_nowait(_CLEAR)

    def __aiter__(self) -> AvatarEngine:
        self.start()
        return self

    async def __anext__(self) -> VideoFrame:
        item = await self._out.get()
        if item is _END:
            self._out.put_nowait(_END)  # later calls end too
            raise StopAsyncIteration
        frame: VideoFrame = item
        return frame

    async def aclose(self) -> None:
        """Stop the tasks; frames not yet taken are dropped."""
        self._closed = True
        await cancel(*self._tasks)
        self._ready.clear()

    # -- analysis task --------------------------------------------------------------------

    async def _analysis(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            gen = self._generation
            jobs, end = await self._call(self._analyze, batch)
            if gen == self._generation:
                now = self.clock.now_ns()
                for job in jobs:
                    self._add_job(job, now)
            if end:
                self._ready.append((_end_job(), 0))
                self._job_added.set()
                return

    def _analyze(self, batch: list[Any]) -> tuple[list[FrameJob], bool]:
        jobs: list[FrameJob] = []
        for item in batch:
            if item is _CLEAR:
                self.analyzer.clear()
                jobs.clear()
            elif item is _END:
                return jobs + self.analyzer.finish(), True
            else:
                jobs.extend(self._analyze_block(*item))
        return jobs, False

    def _analyze_block(self, samples: np.ndarray, rate: int, arrival: int) -> list[FrameJob]:
        started = self.clock.now_ns() if self.profile else 0
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        if rate != self.rate:
            with self.meter.stage("resample"):
                samples = self._resample(samples, rate)
        jobs = self.analyzer.push(samples, arrival)
        for job in jobs:
            job.inbox_wait_ns = started - arrival if self.profile else 0
        return jobs

    def _add_job(self, job: FrameJob, now: int) -> None:
        self._ready.append((job, now))
        if job.motion is not None:
            self.stats.model_frames += 1
        if self.max_backlog is not None:
            while len(self._ready) > self.max_backlog:
                old, _ = self._ready.popleft()
                self._carry_events(old)
                self.stats.skipped += 1
        self._job_added.set()

    def _carry_events(self, dropped: FrameJob) -> None:
        if dropped.events and self._ready:
            self._ready[0][0].events[:0] = dropped.events

    # -- tick task ------------------------------------------------------------------------

    async def _ticks(self) -> None:
        period = NS_PER_S / self.fps
        t0 = self.clock.now_ns()
        tick = out = 0
        phase = (
            TickPhase(period, adjust=self.cfg.tick_phase) if self.max_backlog is not None else None
        )
        while True:
            due = t0 + round(tick * period)
            await self.clock.sleep_until(due)
            if not self.realtime:
                await self._wait_for_job()
            job, ready_ns = self._ready.popleft() if self._ready else (None, due)
            self._job_added.clear()
            if job is not None and job.index < 0:
                await self._out.put(_END)
                return
            if phase is not None:
                shift, trim = phase.observe(due, ready_ns if job else None, len(self._ready))
                t0 += shift
                if trim and self._ready:
                    self._carry_events(self._ready.popleft()[0])
                    self.stats.skipped += 1
            pts = round((tick if self.realtime else out) * period)
            frame = await self._call(self._render, job, out, pts, due, ready_ns)
            await self._emit(frame)
            tick, out = tick + 1, out + 1
            behind = self.clock.now_ns() - (t0 + round(tick * period))
            if self.realtime and behind >= period:
                missed = math.floor(behind / period)
                tick += missed
                self.stats.late += missed
                if phase is not None:  # live: the frames of the missed ticks go with them
                    for _ in range(min(missed, len(self._ready))):
                        self._carry_events(self._ready.popleft()[0])
                        self.stats.skipped += 1

    async def _wait_for_job(self) -> None:
        while not self._ready:
            await self._job_added.wait()
            self._job_added.clear()

    def _render(
        self, job: FrameJob | None, index: int, pts: int, due: int, ready_ns: int
    ) -> VideoFrame:
        start = self.clock.now_ns()
        motion = self._motion(job, index, pts)
        image = self._reused_image(motion, index)
        if image is None:
            image = self.renderer.render(motion)
            self.stats.rendered += 1
        audio = job.audio if job is not None else _silence(self.rate, self.fps)
        if self.cfg.sync_marker:
            image = _mark_loud(image, audio.samples)
        audio = AudioChunk(audio.samples, audio.sample_rate, pts, motion.is_speech)
        timing = FrameTiming(
            job.index if job is not None else -1,
            job.audio_in_ns if job is not None else due,
            ready_ns, due, start, self.clock.now_ns(),
        )  # fmt: skip
        events: list[SpeechEvent] = job.events if job is not None else []
        if self.profile:
            timing.stages = {**(job.stages if job else {}), "render": timing.render_end_ns - start}
            timing.waits = {"inbox": job.inbox_wait_ns if job else 0, "ready": start - ready_ns}
        frame = VideoFrame(index, pts, image, audio, motion, events, timing)
        self._last = frame
        return frame

    def _motion(self, job: FrameJob | None, index: int, pts: int) -> MotionFrame:
        src = job.motion if job is not None else None
        if src is None:
            motion = MotionFrame(index, pts, np.zeros(len(BLENDSHAPES), np.float32),
                                 np.zeros(len(VISEMES), np.float32), is_speech=False)  # fmt: skip
        else:
            motion = MotionFrame(index, pts, src.blendshapes, src.visemes, is_speech=True)
        return self.idle.apply(motion)

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

    async def _emit(self, frame: VideoFrame) -> None:
        assert frame.timing is not None
        frame.timing.emit_ns = self.clock.now_ns()
        self.stats.frames += 1
        self._frame_out.set()
        if frame.timing.source_index >= 0:
            self._samples_out += len(frame.audio.samples) if frame.audio is not None else 0
            self.stats.latencies_ns.append(frame.timing.latency_ns)
            self.stats.measured += 1
        else:
            self.stats.filled += 1
        if self.realtime and self._out.full():
            self._out.get_nowait()
            self.stats.dropped += 1
        await self._out.put(frame)

    # -- helpers --------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        rs = self._resamplers.get(rate)
        if rs is None:
            rs = self._resamplers[rate] = mono_stream(self.rate, rate)
        return rs.push(samples)


class TickPhase:
    """Keeps live ticks just after their frames become ready, and the backlog near zero.

    Every ``window`` ticks: if a frame was always waiting even after a tick took one, one frame
    is skipped (a frame of latency removed); otherwise, if every frame taken had waited more than
    ``margin``, the ticks move that much earlier. A tick that finds nothing, followed by a frame
    ready within the period, moves the ticks later to just after it. Returns (shift ns, trim).
    """

    def __init__(
        self, period_ns: float, window: int = 25, margin_ns: int = 6_000_000, adjust: bool = True
    ) -> None:
        self.period, self.window, self.margin = period_ns, window, margin_ns
        self.adjust = adjust  # False: only trim the backlog, never move the ticks
        self._waits: list[int] = []
        self._min_backlog = 1 << 30
        self._ticks = 0
        self._empty_due: int | None = None

    def observe(self, due: int, ready_ns: int | None, backlog: int) -> tuple[int, bool]:
        shift, trim = 0, False
        if ready_ns is None:
            self._empty_due = due
        else:
            if self._empty_due is not None and 0 < ready_ns - self._empty_due < self.period:
                shift = round(ready_ns - self._empty_due + self.margin - self.period)
                self._waits.clear()
            self._empty_due = None
            self._waits.append(due - ready_ns)
        self._min_backlog = min(self._min_backlog, backlog)
        self._ticks += 1
        if self._ticks >= self.window:
            if self._min_backlog >= 1:
                trim = True
            elif len(self._waits) == self._ticks and min(self._waits) > self.margin:
                shift = -(min(self._waits) - self.margin)
            self._waits.clear()
            self._min_backlog, self._ticks = 1 << 30, 0
        return (shift if self.adjust else 0), trim


def _mark_loud(image: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """A/V check overlay: a white top-left square on a frame whose own audio is loud."""
    if len(samples) and float(np.sqrt(np.mean(samples**2))) > MARKER_RMS:
        image = image.copy()
        image[:MARKER_PX, :MARKER_PX] = 255
    return image


def _end_job() -> FrameJob:
    return FrameJob(-1, AudioChunk(np.zeros(0, np.float32), 1, 0), None, 0)


def _silence(rate: int, fps: float) -> AudioChunk:
    return AudioChunk(np.zeros(round(rate / fps), np.float32), rate, 0, False)
