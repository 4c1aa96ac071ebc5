"""GAN renderer on a GPU: fp16 throughput at batch 1/8/32 and parity with the CPU output.

For a lent GPU machine (one short run): torch CUDA fp16 with CUDA graphs (the `torch-cuda`
backend), onnxruntime CUDA when its GPU build is installed, TensorRT when it is installed; the
reference is onnxruntime CPU fp32 on the same inputs. Prints one markdown table and writes
JSON to $OUT (or ./out). Usage: python scripts/bench_gan_gpu.py [--avatar carphone]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.backends.torch import TorchBackend, TorchCudaBackend
from avatar.face.sketch import GENERATOR_KIND, INPUT_NAMES, OUTPUT_NAMES
from avatar.face.store import load_avatar
from avatar.gan.generator import MouthGenerator


def inputs(batch: int, size: int, code: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {
        "warped": rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32),
        "sketch": rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32),
        "code": rng.uniform(0, 1, (batch, code)).astype(np.float32),
    }
    assert tuple(feed) == INPUT_NAMES
    return feed


def throughput(backend: InferenceBackend, feed: dict[str, np.ndarray], seconds: float) -> float:
    for _ in range(5):
        backend.run(feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        backend.run(feed)
        n += 1
    return n * len(feed["code"]) / (time.perf_counter() - t0)


def torch_backend(ckpt_path: Path, cuda: bool) -> InferenceBackend:
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = MouthGenerator.from_checkpoint(ckpt)
    meta = {"kind": GENERATOR_KIND, "dims": ckpt["dims"]}
    cpu = TorchBackend(model, INPUT_NAMES, OUTPUT_NAMES, meta)
    return TorchCudaBackend.from_torch(cpu, cuda_graphs=True) if cuda else cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="carphone")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    assets = load_avatar(args.avatar)
    onnx, pt = assets.file("gan.onnx"), assets.file("gan.pt")
    assert onnx and pt, "the avatar needs gan.onnx and gan.pt"
    reference = OrtBackend(onnx, threads=os.cpu_count() or 1)
    dims = reference.meta["dims"]
    candidates: dict[str, Any] = {"onnxruntime-cpu": lambda: reference}
    candidates["torch-cuda-fp16-graphs"] = lambda: torch_backend(pt, cuda=True)
    candidates["onnxruntime-cuda"] = lambda: OrtBackend(onnx, providers=["CUDAExecutionProvider"])
    rows: list[dict[str, Any]] = []
    for name, make in candidates.items():
        try:
            backend = make()
        except Exception as e:  # report what could not run, keep going
            rows.append({"backend": name, "error": str(e).splitlines()[0]})
            continue
        for batch in (1, 8, 32):
            feed = inputs(batch, dims["size"], dims["code"])
            want = reference.run(feed)["mouth"].copy()
            got = backend.run(feed)["mouth"]
            rows.append({
                "backend": name, "batch": batch,
                "fps": round(throughput(backend, feed, args.seconds), 1),
                "max_abs_diff_vs_cpu": float(np.abs(got - want).max()),
            })  # fmt: skip
    print("| backend | batch | crops/s | max abs diff vs ORT CPU fp32 |")
    print("|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | - | not run: {r['error']} | - |")
        else:
            print(
                f"| {r['backend']} | {r['batch']} | {r['fps']} | {r['max_abs_diff_vs_cpu']:.4f} |"
            )
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gan_gpu.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
