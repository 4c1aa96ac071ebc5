"""Benchmark the renderers: ms per frame at 256 and 512, one core, against copying a frame.

Warp renderer (OpenCV, 1 thread) on the default avatar, the GAN renderer on onnxruntime CPU
(1 thread) on the bundled video avatar, and the baseline: copying the portrait (what a renderer
that draws nothing costs). Motion is a recorded-like sweep of jaw/lip shapes with blinks and head
motion, so every code path runs. Usage: python scripts/bench_render.py [--frames 300]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from avatar.config import RenderConfig
from avatar.face.store import load_avatar
from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX as BI
from avatar.motion.idle import IdleAnimator
from avatar.render.base import Renderer
from avatar.render.factory import load_gan_backend
from avatar.render.gan import GanRenderer
from avatar.render.warp import WarpRenderer


def motions(n: int) -> list[MotionFrame]:
    idle = IdleAnimator(seed=1, blink_every_s=(1.0, 2.0))
    out = []
    for i in range(n):
        t = i / 25
        b = np.zeros(16, np.float32)
        b[BI["jawOpen"]] = 0.3 + 0.3 * np.sin(2 * np.pi * 2.1 * t)
        b[BI["mouthFunnel"]] = 0.3 * max(np.sin(2 * np.pi * 0.7 * t), 0)
        b[BI["mouthPressLeft"]] = b[BI["mouthPressRight"]] = 0.4 * max(
            np.cos(2 * np.pi * 1.3 * t), 0
        )
        m = MotionFrame(i, round(t * 1e9), b, np.zeros(15, np.float32))
        out.append(idle.apply(m))
    return out


class CopyRenderer:
    """Baseline: hand out a copy of the portrait."""

    name = "copy"

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.size = image.shape[0]

    def render(self, motion: MotionFrame) -> np.ndarray:
        return self.image.copy()


def time_renderer(r: Renderer, frames: list[MotionFrame]) -> np.ndarray:
    for m in frames[:10]:
        r.render(m)
    times = []
    for m in frames:
        t0 = time.perf_counter()
        r.render(m)
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--gan-avatar", default="carphone")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = motions(args.frames)
    default = load_avatar("default")
    rows = []
    for size in (256, 512):
        warp = WarpRenderer(default, size)
        candidates: list[tuple[str, Renderer]] = [
            ("copy (baseline)", CopyRenderer(warp.portrait)),
            ("warp, OpenCV 1 thread", warp),
        ]
        try:
            gan_assets = load_avatar(args.gan_avatar)
            backend = load_gan_backend(gan_assets, RenderConfig(backend="onnxruntime", threads=1))
            candidates.append(
                ("GAN, onnxruntime CPU 1 thread", GanRenderer(gan_assets, backend, size))
            )
        except Exception as e:  # the bench still reports the warp renderer
            print(f"GAN renderer skipped: {e}")
        base = None
        for name, r in candidates:
            ms = time_renderer(r, frames)
            p50 = float(np.median(ms))
            base = base or p50
            rows.append((size, name, p50, float(np.percentile(ms, 95)), p50 / base))
    print(f"{args.frames} frames per renderer; ms per frame")
    print("| size | renderer | p50 ms | p95 ms | x copy |")
    print("|---|---|---|---|---|")
    for size, name, p50, p95, ratio in rows:
        print(f"| {size} | {name} | {p50:.2f} | {p95:.2f} | {ratio:.0f}x |")


if __name__ == "__main__":
    main()
