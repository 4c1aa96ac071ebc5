"""How many live sessions a machine holds: the server's per-session work, N at once, in real time.

Each simulated session is what ``avatar serve`` runs for one peer, minus the network: speech
pushed in 20 ms packets at real time (*continuous*: the sample with 1 s pauses, looped; *duty*: a
call, where the avatar talks in turns of 3-8 s and listens to a microphone's noise floor for as
long between them, about half the time, so the speech gate sleeps the model and only every
``engine.idle_render_every``-th frame is rendered while it listens), the engine (VAD,
features, audio-to-motion, render and colour conversion on its ticks), then the server's video
track hands each frame to aiortc's own VP8 encoder in the thread pool, as the sender does. A
frame is *late* when its tick was missed (the engine skipped it) or when it was dropped because
conversion and encoding could not keep up. The *encode-only* baseline runs the same sessions
sending a static frame (conversion + encoding at 25 fps, nothing else). RTP packetization, SRTP,
Opus and the client side are not included.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar.clock import MonotonicClock
from avatar.compose.engines import Batchers, build_engine, executor_workers, one_thread_per_call
from avatar.compose.profile import duty_speech, feed_realtime, session_speech
from avatar.config import Config
from avatar.engine.engine import AvatarEngine
from avatar.frames import FrameTiming, VideoFrame
from avatar.profile.log import FrameRecord, summarize
from avatar.profile.profiler import Profiler
from avatar.server.aiortc_hooks import tune_encoders
from avatar.server.tracks import EngineVideoTrack, FrameEncoder
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S

SPEECH_MODES = ("continuous", "duty")  # what each session says: see the module docstring


@dataclass(slots=True)
class RunResult:
    sessions: int
    seconds: float
    ticks: int
    late: int
    cpu_s: float
    stages: dict[str, Any] = field(default_factory=dict)
    talking: int = 0  # frames in which the avatar spoke (the engine's speech gate decided)

    @property
    def late_share(self) -> float:
        return self.late / max(self.ticks, 1)

    @property
    def cpu_per_session(self) -> float:
        """Share of one core each session used."""
        return self.cpu_s / self.seconds / self.sessions

    @property
    def talking_share(self) -> float:
        """Share of the frames in which the avatar spoke."""
        return self.talking / max(self.ticks - self.late, 1)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def session_input(speech: str, seconds: float, k: int) -> np.ndarray:
    """Session ``k``'s input in speech mode ``speech`` (one of :data:`SPEECH_MODES`)."""
    if speech == "duty":
        return duty_speech(seconds, session=k)
    if speech == "continuous":
        return session_speech(seconds, offset_s=1.3 * k)
    raise ValueError(f"speech mode {speech!r}: use one of {', '.join(SPEECH_MODES)}")


async def _avatar_session(
    engine: AvatarEngine, encoder: FrameEncoder, pool: ThreadPoolExecutor, clock: MonotonicClock,
    seconds: float, speech: np.ndarray, k: int,
) -> tuple[int, int, int]:  # fmt: skip
    loop = asyncio.get_running_loop()
    feeder = spawn(feed_realtime(engine, speech, clock), f"bench-feed-{k}")
    track = EngineVideoTrack(pool, encoder.observer)
    engine.start()
    end = clock.now_ns() + round(seconds * NS_PER_S)
    consumed = talking = 0
    try:
        async for frame in engine:  # the server's path: the video track, then the encoder
            track.offer(frame)
            picture = await track.recv()
            await loop.run_in_executor(pool, encoder.encode_picture, picture, frame)
            consumed += 1
            talking += frame.audio is not None and frame.audio.is_speech
            if clock.now_ns() >= end:
                break
    finally:
        await cancel(feeder)
        await engine.aclose()
    s = engine.stats
    return consumed + s.late + s.dropped, s.late + s.dropped, talking


async def _static_session(
    size: int, fps: float, pool: ThreadPoolExecutor, clock: MonotonicClock, seconds: float
) -> tuple[int, int, int]:
    """Encode-only: a static frame converted and encoded every tick; a missed tick is late."""
    loop = asyncio.get_running_loop()
    image = np.full((size, size, 3), 128, np.uint8)
    image[size // 4 : size // 2, size // 4 : size // 2] = 200  # not a flat field
    encoder, period = FrameEncoder(), NS_PER_S / fps
    start = clock.now_ns()
    tick = late = sent = 0
    while tick * period < seconds * NS_PER_S:
        due = start + round(tick * period)
        await clock.sleep_until(due)
        timing = FrameTiming(0, due, due, due, due, due, clock.now_ns())
        frame = VideoFrame(tick, round(tick * period), image, timing=timing)
        await loop.run_in_executor(pool, encoder.encode, frame)
        sent += 1
        tick += 1
        behind = clock.now_ns() - (start + round(tick * period))
        if behind >= period:
            missed = int(behind // period)
            tick, late = tick + missed, late + missed
    return sent + late, late, 0


def run_sessions(
    cfg: Config, n: int, seconds: float, static: bool = False, ready: Callable[[], Any] = list,
    speech: str = "continuous", first: int = 0,
) -> RunResult:  # fmt: skip
    """N sessions at once for ``seconds``, saying ``speech`` (:data:`SPEECH_MODES`); CPU of this
    process over the run. With ``engine.batch.enabled`` the sessions' model calls are batched as
    the server batches them. ``ready()`` is called once the models are loaded, right before
    streaming starts. Sessions are numbered from ``first`` (their inputs differ by number)."""
    inputs: list[np.ndarray] = [
        session_input(speech, seconds + 2, first + k) for k in range(0 if static else n)
    ]
    tune_encoders(cfg.server.encoder)  # the encoder settings a server uses
    one_thread_per_call()  # as a server's process runs its sessions
    clock = MonotonicClock()
    pool = ThreadPoolExecutor(executor_workers(cfg.engine))
    batchers = Batchers(cfg.engine.batch, clock)
    profilers = [] if static else [Profiler(clock, cfg.motion.fps, f"s{k}") for k in range(n)]
    started: list[float] = []

    def build(profiler: Profiler) -> AvatarEngine:
        return build_engine(cfg, clock, live=True, executor=pool, observer=profiler,
                            backend=batchers.motion(cfg.motion),
                            renderer=batchers.renderer(cfg.render))  # fmt: skip

    async def main() -> list[tuple[int, int, int]]:
        loop = asyncio.get_running_loop()
        if static:
            await loop.run_in_executor(None, ready)
            started.extend([_cpu_s(), clock.now_ns() / NS_PER_S])
            return await asyncio.gather(*(
                _static_session(cfg.render.size, cfg.motion.fps, pool, clock, seconds)
                for _ in range(n)
            ))  # fmt: skip
        engines = [await loop.run_in_executor(pool, build, p) for p in profilers]
        await loop.run_in_executor(None, ready)
        started.extend([_cpu_s(), clock.now_ns() / NS_PER_S])  # loading models is not streaming
        return await asyncio.gather(*(
            _avatar_session(e, FrameEncoder(p), pool, clock, seconds, x, first + k)
            for k, (e, p, x) in enumerate(zip(engines, profilers, inputs, strict=True))
        ))  # fmt: skip

    try:
        results = asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
        batchers.close()
    cpu, wall = _cpu_s() - started[0], clock.now_ns() / NS_PER_S - started[1]
    ticks, late, talking = (sum(r[i] for r in results) for i in range(3))
    records: list[FrameRecord] = [r for p in profilers for r in p.records]
    stages = summarize(records, cfg.motion.fps)["stages"] if records else {}
    # model loading is inside the wall time; CPU per session is over the streaming seconds
    return RunResult(n, min(wall, seconds), ticks, late, cpu, stages, talking)


def _run_part(
    cfg: Config, n: int, seconds: float, static: bool, barrier: Any, speech: str, first: int
) -> RunResult:
    return run_sessions(cfg, n, seconds, static, barrier.wait, speech, first)


def run_spread(
    cfg: Config, n: int, seconds: float, static: bool = False, processes: int = 1,
    speech: str = "continuous",
) -> RunResult:  # fmt: skip
    """N sessions spread over ``processes`` worker processes as evenly as ``avatar serve
    --workers`` spreads them (fewest sessions first), streaming over the same seconds (a barrier
    after the models load). Late frames, ticks, talking frames and CPU are summed; stage p50s
    are the processes' mean."""
    if processes <= 1 or n <= 1:
        return run_sessions(cfg, n, seconds, static, speech=speech)
    parts = [n // processes + (k < n % processes) for k in range(min(processes, n))]
    firsts = [sum(parts[:k]) for k in range(len(parts))]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(len(parts), mp_context=ctx) as pool:
        barrier = manager.Barrier(len(parts))
        futures = [pool.submit(_run_part, cfg, k, seconds, static, barrier, speech, first)
                   for k, first in zip(parts, firsts, strict=True)]  # fmt: skip
        results = [f.result() for f in futures]
    stages: dict[str, Any] = {}
    for name in {s for r in results for s in r.stages}:
        p50 = [r.stages[name]["p50"] for r in results if (r.stages.get(name) or {}).get("p50")]
        stages[name] = {"p50": sum(p50) / len(p50)} if p50 else {}
    return RunResult(
        n, min(r.seconds for r in results), sum(r.ticks for r in results),
        sum(r.late for r in results), sum(r.cpu_s for r in results), stages,
        sum(r.talking for r in results),
    )  # fmt: skip


def find_capacity(
    cfg: Config, seconds: float, max_sessions: int, static: bool = False, limit: float = 0.01,
    processes: int = 1, speech: str = "continuous",
) -> tuple[int, list[RunResult]]:  # fmt: skip
    """Largest N (1..max) whose late share stays <= ``limit``; stops at the first failure."""
    runs: list[RunResult] = []
    best = 0
    for n in range(1, max_sessions + 1):
        r = run_spread(cfg, n, seconds, static, processes, speech)
        runs.append(r)
        if r.late_share > limit:
            break
        best = n
    return best, runs
