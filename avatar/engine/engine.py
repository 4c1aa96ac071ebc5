"""The engine contract: ``push_audio`` / ``clear_buffer`` in, synchronized frames out.

One :class:`AvatarEngine` per session (like LiveKit's avatar ``VideoGenerator``)::

    engine.push_audio(AudioChunk(samples, rate))         # any rate, mono float32
    engine.clear_buffer()                                # interruption: drop queued audio
    async for frame in engine:                           # VideoFrame: image + its audio + motion
        ...

Every pushed block takes one straight path through the stages, each in its own file::

    push_audio -> inbox -> [front -> gate -> motion -> assembly] -> ready -> tick -> [render] -> out
                            front.py  audio/vad.py  motion.py  assembly.py  budget.py  render.py

Two tasks run per engine and neither blocks the event loop (the bracketed work runs in an
executor): the *analysis* task takes pushed blocks in order through the audio front, the speech
gate, the motion stage and the frame assembly; the *tick* task, paced by the frame budget, renders
the next job (or an idle frame) and hands it out. With ``i420`` (engines that feed a video
encoder) the render hop also converts the image to the encoder's I420 planes
(:mod:`avatar.render.i420`), so the video track only wraps them. Queues are bounded: live input
skips the oldest audio when the analysis falls behind, the budget skips frames beyond its backlog
(see :mod:`avatar.engine.budget` for the late-frame policy), and a frame the consumer does not
take is dropped for a newer one. Offline (``realtime=False``, ``avatar render`` on a
:class:`~avatar.clock.FakeClock`) ticks wait for jobs and frames wait for the consumer.

Pushed audio has no timeline of its own: blocks are laid end to end, and a block's time is when
it was pushed (on the engine clock; latency is measured from it). Live input's timeline *is* its
arrival: a gap in a microphone's packets is already silence on the output, where the paced ticks
fill it with idle frames, so adding silence for a gap in the source's timestamps as well would play
it twice and add its length to the latency; buffered input (a file, text-to-speech) is contiguous.
A pushed :class:`~avatar.frames.AudioChunk` therefore leaves ``pts_ns`` and ``is_speech`` at their
defaults, and the engine refuses others rather than ignore them. They are output fields: a
frame's audio carries its time on the output timeline and whether the avatar speaks in it (the
engine's own speech gate decides that from the sound).

An :class:`~avatar.observe.Observer` (profiling) hears every stage; the default hears nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from avatar.audio.vad import SpeechGate
from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock
from avatar.config import EngineConfig, VadConfig
from avatar.engine.assembly import FrameAssembler, FrameJob
from avatar.engine.budget import EngineStats, FrameBudget, Ready
from avatar.engine.front import AudioBlock, AudioFront
from avatar.engine.motion import MotionStage
from avatar.engine.render import RenderStage
from avatar.errors import AudioInputError
from avatar.frames import AudioChunk, FrameTiming, VideoFrame
from avatar.observe import NULL_OBSERVER, Observer
from avatar.render.base import Renderer
from avatar.tasks import cancel, spawn
from avatar.units import ANALYSIS_RATE, OUTPUT_RATE

T = TypeVar("T")
log = logging.getLogger("avatar.engine")
MAX_INPUT_RATE = 384_000


@dataclass(slots=True)
class PushedAudio:
    """Inbox: a block :meth:`AvatarEngine.push_audio` queued, pushed at ``arrival_ns``."""

    samples: np.ndarray  # (n,) float32 at ``rate``
    rate: int
    arrival_ns: int  # engine clock


@dataclass(slots=True)
class Clear:
    """Inbox: :meth:`AvatarEngine.clear_buffer`: every stage drops its pending work."""


@dataclass(slots=True)
class EndOfInput:
    """Inbox: :meth:`AvatarEngine.end_input`; outbox: the frames of all the input are out."""


InboxItem = PushedAudio | Clear | EndOfInput
OutboxItem = VideoFrame | EndOfInput


class AvatarEngine:
    """One session's engine; see the module docstring."""

    def __init__(
        self,
        backend: InferenceBackend,
        renderer: Renderer,
        clock: Clock,
        cfg: EngineConfig,
        vad: VadConfig,
        fps: float,
        *,
        live: bool = False,
        realtime: bool = True,
        executor: Executor | None = None,
        observer: Observer = NULL_OBSERVER,
        idle_seed: int = 0,
        i420: bool = False,
    ) -> None:
        self.clock, self.cfg, self.fps, self.rate = clock, cfg, fps, OUTPUT_RATE
        self.realtime, self.executor, self.observer = realtime, executor, observer
        self.front = AudioFront(OUTPUT_RATE, ANALYSIS_RATE, observer)
        self.gate = SpeechGate(vad, ANALYSIS_RATE, sleep_after_ms=cfg.sleep_after_ms,
                               observer=observer)  # fmt: skip
        lead_ms = cfg.live_lead_ms if live else cfg.lead_ms
        self.motion = MotionStage(
            backend, fps, OUTPUT_RATE, ANALYSIS_RATE, cfg.preroll_ms, observer, lead_ms / 1000
        )
        self.assembly = FrameAssembler(OUTPUT_RATE, fps, self.motion.delay, observer)
        self.render = RenderStage(renderer, cfg, OUTPUT_RATE, fps, idle_seed, i420=i420)
        self.budget = FrameBudget(fps, cfg, live=live, realtime=realtime)
        # live input is bounded (the oldest block is dropped); buffered input is unbounded
        self._inbox: asyncio.Queue[InboxItem] = asyncio.Queue(cfg.input_queue_chunks if live else 0)
        self._ready: Ready = Ready()
        self._job_added = asyncio.Event()  # a job was added, or the analysis ended
        self._out: asyncio.Queue[OutboxItem] = asyncio.Queue(cfg.output_queue_frames)
        self._generation = 0  # bumped by clear_buffer: results of older work are discarded
        self._input_done = False
        self._analysis_done = False  # the end of input went through: no job will follow
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._samples_pushed = self._samples_out = 0  # for wait_for_room
        self._frame_out = asyncio.Event()
        self._faults: list[str] = []  # for the session's error events
        self._faults_total = 0

    @property
    def stats(self) -> EngineStats:
        return self.budget.stats

    @property
    def renderer(self) -> Renderer:
        return self.render.renderer

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
        """Queue mono float32 audio at any rate (resampled to the output rate), placed right
        after the audio pushed before it (``chunk.pts_ns`` and ``is_speech`` are output fields:
        see the module docstring)."""
        if self._input_done or self._closed:
            raise RuntimeError("push_audio after end_input or close")
        rate = chunk.sample_rate
        if not 1000 <= rate <= MAX_INPUT_RATE:
            raise AudioInputError(f"audio sample rate {rate} Hz is not supported (1k-384k)")
        if chunk.pts_ns or not chunk.is_speech:
            raise AudioInputError(
                "pushed audio takes no pts_ns or is_speech: blocks play one after another and "
                "the engine's speech gate decides what is speech (leave both at their defaults)"
            )
        samples = np.asarray(chunk.samples, np.float32).reshape(-1)
        if len(samples) == 0:
            return
        self._samples_pushed += len(samples) * self.rate // rate
        if self._inbox.full():
            old = self._inbox.get_nowait()  # a live source outran the analysis: keep the newest
            self.stats.skipped += 1
            if isinstance(old, PushedAudio):
                self.stats.skipped_samples += len(old.samples) * self.rate // old.rate
        self._inbox.put_nowait(PushedAudio(samples, rate, self.clock.now_ns()))

    async def wait_for_room(self, max_pending_s: float) -> None:
        """Backpressure for a producer faster than real time (a file): wait while more than
        ``max_pending_s`` of pushed audio has not been handed out as frames."""
        limit = max_pending_s * self.rate
        while self._pending_samples() > limit and not self._closed:
            self._frame_out.clear()
            await self._frame_out.wait()

    def end_input(self) -> None:
        """No more audio: the frames of what was pushed are produced, then iteration ends."""
        if not self._input_done:
            self._inbox.put_nowait(EndOfInput())
            self._input_done = True

    def clear_buffer(self) -> None:
        """Interruption: audio queued or not yet played is dropped; the avatar goes idle."""
        self._generation += 1
        while not self._inbox.empty():
            if isinstance(self._inbox.get_nowait(), EndOfInput):
                self._input_done = False
        self._ready.clear()
        self._samples_out = self._samples_pushed - self.stats.skipped_samples
        self._inbox.put_nowait(Clear())

    def __aiter__(self) -> AvatarEngine:
        self.start()
        return self

    async def __anext__(self) -> VideoFrame:
        item = await self._out.get()
        if isinstance(item, EndOfInput):
            self._out.put_nowait(item)  # later calls end too
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop the tasks; audio and frames not yet taken are dropped (and their memory)."""
        self._closed = True
        await cancel(*self._tasks)
        self._ready.clear()
        for queue in (self._inbox, self._out):
            while not queue.empty():
                queue.get_nowait()
        self._frame_out.set()  # a producer waiting for room stops waiting

    @property
    def pending_audio_s(self) -> float:
        """Pushed audio not yet handed out as frames (seconds); what live input skipped is
        not waiting."""
        return self._pending_samples() / self.rate

    def _pending_samples(self) -> int:
        return max(self._samples_pushed - self._samples_out - self.stats.skipped_samples, 0)

    def take_faults(self) -> list[str]:
        """Failures of the model or the renderer since the last call (the session reports them
        as ``error`` events; the avatar went idle meanwhile)."""
        faults = self.render.faults + self._faults
        self.render.faults, self._faults = [], []
        return faults

    @property
    def faults_total(self) -> int:
        return self.render.faults_total + self._faults_total

    # -- analysis task: front -> gate -> motion -> assembly -------------------------------

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
                self._analysis_done = True
                self._job_added.set()
                return

    def _analyze(self, batch: list[InboxItem]) -> tuple[list[FrameJob], bool]:
        jobs: list[FrameJob] = []
        for item in batch:
            match item:
                case PushedAudio():
                    jobs += self._analyze_safely(item)
                case Clear():
                    jobs.clear()
                    self._interrupt()
                case EndOfInput():
                    return jobs + self._finish(), True
        return jobs, False

    def _analyze_safely(self, item: PushedAudio) -> list[FrameJob]:
        """A block through the stages; if the model fails, the block is dropped, every stage
        starts over (the avatar goes idle) and the fault is reported."""
        try:
            return self.analyze(item.samples, item.rate, item.arrival_ns)
        except Exception as exc:
            log.error("motion model failed: %r (the avatar goes idle)", exc, exc_info=exc)
            self._faults.append("motion model failed; the avatar is idle until new speech")
            self._faults_total += 1
        try:
            self._interrupt()
        except Exception as again:  # the reset runs no model; if it fails, the next block will
            log.error("resetting the analysis failed too: %r", again)
        return []

    def analyze(self, samples: np.ndarray, rate: int, arrival_ns: int) -> list[FrameJob]:
        """One pushed block through the analysis stages, synchronously (the analysis task runs
        this in the executor; benchmarks call it directly). Returns the jobs it completed."""
        wait = self.observer.now() - arrival_ns if self.observer.enabled else 0
        return self._chain(self.front.push(samples, rate, arrival_ns), wait)

    def _chain(self, block: AudioBlock, inbox_wait_ns: int = 0) -> list[FrameJob]:
        """One block's straight path: gate, motion, assembly (the front made the block)."""
        step = self.gate.push(block.analysis)
        motion = self.motion.push(block.analysis, step.switches)
        return self.assembly.push(block, motion, step.events, self.motion.running_from,
                                inbox_wait_ns)  # fmt: skip

    def _finish(self) -> list[FrameJob]:
        step = self.gate.flush()
        return self.assembly.finish(self.motion.finish(), step.events)

    def _interrupt(self) -> None:
        """Drop every stage's pending work; silence pads the timeline to a frame boundary."""
        pad = self.assembly.clear()
        self.gate.reset()
        self.motion.clear()
        self._chain(self.front.silence(pad, self.clock.now_ns()))

    def _add_job(self, job: FrameJob, now: int) -> None:
        self._ready.append((job, now))
        if job.motion is not None:
            self.stats.model_frames += 1
        self.budget.admit(self._ready)
        self._job_added.set()

    # -- tick task: budget -> render -> out -----------------------------------------------

    async def _ticks(self) -> None:
        budget = self.budget
        budget.start(self.clock.now_ns())
        while True:
            due = budget.due()
            await self.clock.sleep_until(due)
            if not self.realtime:
                await self._wait_for_job()
            if self._analysis_done and not self._ready:
                await self._out.put(EndOfInput())
                return
            job, ready_ns = self._ready.popleft() if self._ready else (None, due)
            self._job_added.clear()
            budget.on_tick(due, ready_ns if job is not None else None, self._ready)
            frame = await self._call(self._render, job, budget.out, budget.pts(), due, ready_ns)
            await self._emit(frame)
            budget.after_frame(self.clock.now_ns(), self._ready)

    async def _wait_for_job(self) -> None:
        while not self._ready and not self._analysis_done:
            await self._job_added.wait()
            self._job_added.clear()

    def _render(
        self, job: FrameJob | None, index: int, pts: int, due: int, ready_ns: int
    ) -> VideoFrame:
        start = self.clock.now_ns()
        frame = self.render.render(job, index, pts)
        end = self.clock.now_ns()
        frame.timing = FrameTiming(
            job.index if job is not None else -1,
            job.audio_in_ns if job is not None else due,
            ready_ns, due, start, end,
            inbox_wait_ns=job.inbox_wait_ns if job is not None else 0,
            analysis=job.analysis if job is not None else {},
        )  # fmt: skip
        self.observer.span(frame, "render", start, end)
        if self.render.i420:
            self.render.colour(frame)
            self.observer.span(frame, "colour", end, self.observer.now())
        return frame

    async def _emit(self, frame: VideoFrame) -> None:
        timing = frame.timing
        assert timing is not None
        timing.emit_ns = self.clock.now_ns()
        timing.late, timing.skipped = self.budget.decisions()
        self.stats.frames += 1
        self._frame_out.set()
        if timing.source_index >= 0:
            self._samples_out += len(frame.audio.samples) if frame.audio is not None else 0
            self.stats.latencies_ns.append(timing.latency_ns)
            self.stats.measured += 1
        else:
            self.stats.filled += 1
        if self.realtime and self._out.full():
            self._out.get_nowait()
            self.stats.dropped += 1
        await self._out.put(frame)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` in the executor, in this task's context (log lines name the session)."""
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(self.executor, run, fn, *args)
