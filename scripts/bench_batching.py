"""Benchmark cross-session batching: N streams calling a model on their own vs through one batching
worker (avatar.backends.batching), for the motion model and the GAN generator, in one run.

Two loads per model, stream count and mode:

- *saturated*: every stream calls back to back: throughput in calls per wall second and per CPU
  second (this process), per-call latency p50/p95;
- *paced*: every stream calls at 25 Hz from its own phase, as sessions do: latency p50/p95 and
  CPU ms per call.

Per-session mode: each stream has its own onnxruntime backend (one thread; the weights shared).
Batched mode: one BatchingBackend per model, a client per stream. Prints the numbers and the
batched / per-session ratios. Usage:
python scripts/bench_batching.py [--streams 1 4 8 12] [--seconds 0.8] [--max-batch 8]
[--max-wait-ms 2] [--models motion gan]
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from avatar.backends.batching import BatchingBackend
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.clock import MonotonicClock
from avatar.motion.channels import BATCH_AXES
from avatar.motion.runtime import BUILTIN_DIR

GAN = Path(__file__).resolve().parents[1] / "avatar" / "avatars" / "carphone" / "gan.onnx"
MODELS = {"motion": BUILTIN_DIR / "motion.onnx", "gan": GAN}
PERIOD_S = 0.04  # 25 fps


@dataclass
class Result:
    calls: int
    wall_s: float
    cpu_s: float
    latencies_ms: np.ndarray
    rows_per_batch: float = 1.0

    @property
    def per_wall(self) -> float:
        return self.calls / self.wall_s

    @property
    def per_cpu(self) -> float:
        return self.calls / max(self.cpu_s, 1e-9)

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stream:
    """One session's calls: the motion model feeds its state back; the GAN gets fresh frames."""

    def __init__(self, model: str, backend: InferenceBackend, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.model, self.backend = model, backend
        if model == "motion":
            shapes = backend.meta["state_shapes"]
            self.state = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
            self.mel = (rng.standard_normal((1, 4, 80)) * 2 - 5).astype(np.float32)  # 40 ms
        else:
            self.frame = {
                "warped": rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32),
                "sketch": rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32),
                "code": rng.uniform(0, 1, (1, 17)).astype(np.float32),
            }

    def call(self) -> None:
        if self.model == "gan":
            self.backend.run(self.frame)
            return
        out = self.backend.run({"mel": self.mel, **self.state})
        self.state = {n: out[f"{n}_out"] for n in self.state}


def _drive(streams: list[Stream], seconds: float, paced: bool) -> tuple[int, float, float, list]:
    """Run every stream in its own thread for ``seconds``; calls, wall, CPU, latencies."""
    latencies: list[list[float]] = [[] for _ in streams]
    start = time.perf_counter() + 0.05
    end = start + seconds
    phases = np.random.default_rng(0).uniform(0, PERIOD_S, len(streams))

    def loop(k: int) -> None:
        due = start + (phases[k] if paced else 0.0)
        while True:
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            if t0 >= end:
                return
            streams[k].call()
            latencies[k].append((time.perf_counter() - t0) * 1000)
            due = due + PERIOD_S if paced else 0.0

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(streams))]
    for t in threads:
        t.start()
    time.sleep(max(start - time.perf_counter(), 0))
    cpu0 = _cpu_s()
    for t in threads:
        t.join()
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - start
    return sum(len(x) for x in latencies), wall, cpu, [v for x in latencies for v in x]


def measure(model: str, n: int, batched: bool, paced: bool, args: argparse.Namespace) -> Result:
    path = MODELS[model]
    batcher: BatchingBackend | None = None
    if batched:
        axes = BATCH_AXES if model == "motion" else None
        batcher = BatchingBackend(OrtBackend(path), MonotonicClock(), max_batch=args.max_batch,
                                  max_wait_ms=args.max_wait_ms, batch_axes=axes)  # fmt: skip
        make: Callable[[], Any] = batcher.client
    else:
        make = lambda: OrtBackend(path)  # noqa: E731 - one backend (IO bindings) per session
    streams = [Stream(model, make(), seed=k) for k in range(n)]
    for s in streams:  # warm up: IO bindings, the first shapes
        s.call()
    if batcher is not None:
        batcher.batches = batcher.rows = 0
    calls, wall, cpu, lat = _drive(streams, args.seconds, paced)
    rows = batcher.rows / max(batcher.batches, 1) if batcher is not None else 1.0
    if batcher is not None:
        batcher.close()
    return Result(calls, wall, cpu, np.array(lat), rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 12])
    ap.add_argument("--seconds", type=float, default=0.8, help="per measurement")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--models", nargs="+", default=["motion", "gan"], choices=list(MODELS))
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; batching: max_batch {args.max_batch}, "
          f"max_wait {args.max_wait_ms} ms; {args.seconds} s per measurement")  # fmt: skip
    for model in args.models:
        if not MODELS[model].exists():
            print(f"{model}: {MODELS[model]} missing, skipped")
            continue
        print(f"\n{model}")
        print(
            "  load       N  mode        calls/s wall  calls/CPU-s  p50 ms  p95 ms  rows/call"
            "  CPU ms/call"
        )
        for paced in (False, True):
            for n in args.streams:
                per = measure(model, n, False, paced, args)
                bat = measure(model, n, True, paced, args)
                load = "paced" if paced else "saturated"
                for name, r in (("session", per), ("batched", bat)):
                    print(f"  {load:9s} {n:3d}  {name:9s} {r.per_wall:12.0f} {r.per_cpu:12.0f}"
                          f" {r.p(50):7.2f} {r.p(95):7.2f} {r.rows_per_batch:9.2f}"
                          f" {1000 / r.per_cpu:12.3f}")  # fmt: skip
                print(f"  {load:9s} {n:3d}  ratio b/s {bat.per_wall / per.per_wall:12.2f}"
                      f" {bat.per_cpu / per.per_cpu:12.2f} {bat.p(50) / per.p(50):7.2f}"
                      f" {bat.p(95) / per.p(95):7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
