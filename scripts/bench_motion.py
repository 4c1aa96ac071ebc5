"""Benchmark audio-to-motion in streaming mode: ms of compute per 40 ms of audio, one thread.

Pushes 40 ms (640 samples at 16 kHz) at a time through the same MotionStreamer the server uses
(features + model + frame interpolation), for onnxruntime and torch in the same run, and prints
the medians, p95 and the ratio; ``--baseline OLD.onnx`` times another model's onnxruntime graph
in the same run. Usage: python scripts/bench_motion.py [--seconds 30] [--baseline OLD.onnx]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.motion.runtime import BUILTIN_DIR, load_torch_backend
from avatar.motion.stream import MotionStreamer

HOP = 640  # 40 ms at 16 kHz


def speech_like(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)
    return (0.3 * env * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def bench_streaming(backend: InferenceBackend, audio: np.ndarray) -> np.ndarray:
    streamer = MotionStreamer(backend, 25)
    for k in range(0, 16000 * 3, HOP):  # warm up with a full attention cache
        streamer.push(audio[k : k + HOP])
    times = []
    for k in range(16000 * 3, len(audio) - HOP, HOP):
        t0 = time.perf_counter()
        streamer.push(audio[k : k + HOP])
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1000


def bench_model_only(backend: InferenceBackend, audio: np.ndarray) -> np.ndarray:
    """The network alone (4 mel frames -> 2 tokens), without feature extraction."""
    streamer = MotionStreamer(backend, 25)
    streamer.push(audio[: 16000 * 3])
    state = dict(streamer._state)
    mel = np.random.default_rng(1).standard_normal((1, 4, 80)).astype(np.float32) - 3
    times = []
    for _ in range(500):
        t0 = time.perf_counter()
        out = backend.run({"mel": mel, **state})
        times.append(time.perf_counter() - t0)
        state = {n: out[f"{n}_out"] for n in streamer.state_names}
    return np.array(times) * 1000


def bench_offline(backend: InferenceBackend, audio: np.ndarray) -> float:
    """Whole-file mode (1 s pushes): ms of compute per 40 ms of audio."""
    t0 = time.perf_counter()
    streamer = MotionStreamer(backend, 25)
    for k in range(0, len(audio), 16000):
        streamer.push(audio[k : k + 16000])
    streamer.flush()
    return (time.perf_counter() - t0) * 1000 / (len(audio) / HOP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per backend")
    parser.add_argument("--baseline", help="another motion.onnx, timed in the same run")
    args = parser.parse_args()
    audio = speech_like(args.seconds + 3)
    backends: list[InferenceBackend] = [OrtBackend(BUILTIN_DIR / "motion.onnx", threads=1)]
    try:
        backends.append(load_torch_backend(BUILTIN_DIR / "motion.pt", threads=1))
    except Exception as e:
        print(f"torch backend skipped: {e}")
    if args.baseline:
        old = OrtBackend(Path(args.baseline), threads=1)
        old.name = "onnxruntime @ baseline"
        backends.append(old)
    dims = backends[0].meta["dims"]
    print(
        f"model: d={dims['d_model']} layers={dims['n_layers']} window={dims['window']} tokens, "
        f"lookahead={dims['lookahead_tokens'] * 20} ms; 1 thread; {args.seconds:.0f} s of audio"
    )
    print(f"{args.rounds} interleaved rounds; p50/p95 over all pushes of all rounds")
    print("| backend | streaming ms/40ms p50 | p95 | model only p50 | offline ms/40ms |")
    print("|---|---|---|---|---|")
    samples: dict[str, list[np.ndarray]] = {b.name: [] for b in backends}
    model_only: dict[str, list[np.ndarray]] = {b.name: [] for b in backends}
    offline: dict[str, list[float]] = {b.name: [] for b in backends}
    for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
        for b in backends:
            samples[b.name].append(bench_streaming(b, audio))
            model_only[b.name].append(bench_model_only(b, audio))
            offline[b.name].append(bench_offline(b, audio))
    results = {}
    for b in backends:
        s, m = np.concatenate(samples[b.name]), np.concatenate(model_only[b.name])
        results[b.name] = float(np.median(s))
        print(
            f"| {b.name} | {np.median(s):.3f} | {np.percentile(s, 95):.3f} | "
            f"{np.median(m):.3f} | {np.median(offline[b.name]):.3f} |"
        )
    if "torch" in results:
        print(
            f"torch / onnxruntime streaming ratio: {results['torch'] / results['onnxruntime']:.1f}x"
        )
    print(
        f"real-time budget used by onnxruntime: {results['onnxruntime'] / 40 * 100:.1f}% of 40 ms"
    )


if __name__ == "__main__":
    main()
