"""How many live sessions a machine holds: the server's per-session work, N at once, in real time.

Each simulated session is what ``avatar serve`` runs for one peer, minus the network: speech
pushed in 20 ms packets at real time, the engine (VAD, features, audio-to-motion, render on its
ticks), then colour conversion and aiortc's own VP8 encoder for every frame. A frame is *late*
when its tick was missed (the engine skipped it) or when it was dropped because conversion and
encoding could not keep up. The *encode-only* baseline runs the same sessions sending a static
frame (conversion + encoding at 25 fps, nothing else). RTP packetization, SRTP, Opus and the
client side are not included.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar.clock import MonotonicClock
from avatar.compose.engines import build_engine
from avatar.compose.profile import feed_realtime, session_speech
from avatar.config import Config
from avatar.engine.engine import AvatarEngine
from avatar.frames import FrameTiming, VideoFrame
from avatar.profile.log import FrameRecord, summarize
from avatar.profile.profiler import Profiler
from avatar.server.tracks import FrameEncoder
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S


@dataclass(slots=True)
class RunResult:
    sessions: int
    seconds: float
    ticks: int
    late: int
    cpu_s: float
    stages: dict[str, Any] = field(default_factory=dict)

    @property
    def late_share(self) -> float:
        return self.late / max(self.ticks, 1)

    @property
    def cpu_per_session(self) -> float:
        """Share of one core each session used."""
        return self.cpu_s / self.seconds / self.sessions


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _avatar_session(
    engine: AvatarEngine, encoder: FrameEncoder, pool: ThreadPoolExecutor, clock: MonotonicClock,
    seconds: float, k: int,
) -> tuple[int, int]:  # fmt: skip
    loop = asyncio.get_running_loop()
    speech = session_speech(seconds + 2, offset_s=1.3 * k)
    feeder = spawn(feed_realtime(engine, speech, clock), f"bench-feed-{k}")
    engine.start()
    end = clock.now_ns() + round(seconds * NS_PER_S)
    consumed = 0
    try:
        async for frame in engine:
            await loop.run_in_executor(pool, encoder.encode, frame)
            consumed += 1
            if clock.now_ns() >= end:
                break
    finally:
        await cancel(feeder)
        await engine.aclose()
    s = engine.stats
    return consumed + s.late + s.dropped, s.late + s.dropped


async def _static_session(
    size: int, fps: float, pool: ThreadPoolExecutor, clock: MonotonicClock, seconds: float
) -> tuple[int, int]:
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
    return sent + late, late


def run_sessions(cfg: Config, n: int, seconds: float, static: bool = False) -> RunResult:
    """N sessions at once for ``seconds``; CPU of this process over the run."""
    clock = MonotonicClock()
    pool = ThreadPoolExecutor(cfg.engine.workers or os.cpu_count() or 2)
    profilers = [] if static else [Profiler(clock, cfg.motion.fps, f"s{k}") for k in range(n)]
    started: list[float] = []

    def build(profiler: Profiler) -> AvatarEngine:
        return build_engine(cfg, clock, live=True, executor=pool, observer=profiler)

    async def main() -> list[tuple[int, int]]:
        loop = asyncio.get_running_loop()
        if static:
            started.extend([_cpu_s(), time.monotonic()])
            return await asyncio.gather(*(
                _static_session(cfg.render.size, cfg.motion.fps, pool, clock, seconds)
                for _ in range(n)
            ))  # fmt: skip
        engines = [await loop.run_in_executor(pool, build, p) for p in profilers]
        started.extend([_cpu_s(), time.monotonic()])  # loading models is not streaming
        return await asyncio.gather(*(
            _avatar_session(e, FrameEncoder(p), pool, clock, seconds, k)
            for k, (e, p) in enumerate(zip(engines, profilers, strict=True))
        ))  # fmt: skip

    try:
        results = asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    cpu, wall = _cpu_s() - started[0], time.monotonic() - started[1]
    ticks = sum(t for t, _ in results)
    late = sum(x for _, x in results)
    records: list[FrameRecord] = [r for p in profilers for r in p.records]
    stages = summarize(records, cfg.motion.fps)["stages"] if records else {}
    # model loading is inside the wall time; CPU per session is over the streaming seconds
    return RunResult(n, min(wall, seconds), ticks, late, cpu, stages)


def find_capacity(
    cfg: Config, seconds: float, max_sessions: int, static: bool = False, limit: float = 0.01
) -> tuple[int, list[RunResult]]:
    """Largest N (1..max) whose late share stays <= ``limit``; stops at the first failure."""
    runs: list[RunResult] = []
    best = 0
    for n in range(1, max_sessions + 1):
        r = run_sessions(cfg, n, seconds, static)
        runs.append(r)
        if r.late_share > limit:
            break
        best = n
    return best, runs
