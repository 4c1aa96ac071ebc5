"""The profiler's own cost: the same speech through the engine with profiling off and on.

    python scripts/bench_profiler.py [--rounds 3]

The bundled sample goes through ``AvatarEngine`` as fast as possible (no pacing) on the real
monotonic clock, alternating off/on runs; prints ms per frame for each and the ratio on/off.
The analysis alone (VAD, features, model: where most spans are) is compared the same way: it
runs on one thread, so its ratio is far less noisy than the whole engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

from avatar.audio.io import iter_audio
from avatar.clock import MonotonicClock
from avatar.compose.engines import build_engine
from avatar.config import load_config
from avatar.frames import AudioChunk
from avatar.observe import NULL_OBSERVER, Observer
from avatar.profile.profiler import Profiler
from avatar.units import OUTPUT_RATE, PACKET_SAMPLES

ROOT = Path(__file__).resolve().parents[1]


class UnpacedClock(MonotonicClock):
    """Real time readings, but ticks never wait: measures work, not pacing."""

    async def sleep_until(self, t_ns: int) -> None:
        await asyncio.sleep(0)


def observer(profile: bool, clock: MonotonicClock) -> Observer:
    return Profiler(clock, load_config().motion.fps) if profile else NULL_OBSERVER


async def run(speech: np.ndarray, profile: bool) -> float:
    cfg, clock = load_config(), UnpacedClock()
    engine = build_engine(cfg, clock, realtime=False, observer=observer(profile, clock))
    for i in range(0, len(speech), PACKET_SAMPLES):
        engine.push_audio(AudioChunk(speech[i : i + PACKET_SAMPLES], OUTPUT_RATE))
    engine.end_input()
    t0 = time.perf_counter()
    n = 0
    async for _ in engine:
        n += 1
    return (time.perf_counter() - t0) * 1000 / n


def analysis_ms(speech: np.ndarray, profile: bool) -> float:
    clock = MonotonicClock()
    engine = build_engine(load_config(), clock, observer=observer(profile, clock))
    t0, n = time.perf_counter(), 0
    for i in range(0, len(speech), PACKET_SAMPLES):
        n += len(engine.analyze(speech[i : i + PACKET_SAMPLES], OUTPUT_RATE, 0))
    return (time.perf_counter() - t0) * 1000 / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    speech = np.concatenate(list(iter_audio(ROOT / "avatar/assets/sample.ogg", rate=OUTPUT_RATE)))
    asyncio.run(run(speech, False))  # warm-up
    off, on = [], []
    for _ in range(args.rounds):
        off.append(asyncio.run(run(speech, False)))
        on.append(asyncio.run(run(speech, True)))
    a, b = float(np.median(off)), float(np.median(on))
    print(f"engine ms/frame: profiling off {a:.3f}, on {b:.3f} (median of {args.rounds} "
          f"alternating runs); on/off = {b / a:.3f}")  # fmt: skip
    off_a, on_a = [], []
    analysis_ms(speech, False)  # warm-up
    for _ in range(args.rounds):
        off_a.append(analysis_ms(speech, False))
        on_a.append(analysis_ms(speech, True))
    c, d = float(np.median(off_a)), float(np.median(on_a))
    print(f"analysis ms/frame: profiling off {c:.3f}, on {d:.3f}; on/off = {d / c:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
