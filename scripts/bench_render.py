"""Benchmark the renderers: ms per frame at 256 and 512, one core, against copying a frame.

Warp renderer (OpenCV, 1 thread) on the default avatar (the photo's own teeth) and on Grace
Hopper's closed-mouth portrait (drawn teeth, tongue), the GAN renderer on onnxruntime CPU
(1 thread) on the bundled video avatar, and the baseline: copying the portrait (what a renderer
that draws nothing costs). With ``--baseline REV`` the warp renderer of an older commit is timed
in the same run on the same motion (its code checked out in a temporary git worktree, run in a
child process). Motion is a recorded-like sweep of jaw/lip shapes and visemes with blinks and
head motion, so every code path runs.
Usage: python scripts/bench_render.py [--frames 300] [--baseline ec6a1ee]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from avatar.compose.renderers import load_gan_backend
from avatar.config import RenderConfig
from avatar.face.store import load_avatar
from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX as BI
from avatar.motion.idle import IdleAnimator
from avatar.render.base import Renderer
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
        visemes = np.zeros(15, np.float32)
        visemes[(i // 4) % 15] = 1.0  # every viseme in turn (the tongue's paths)
        m = MotionFrame(i, round(t * 1e9), b, visemes)
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


def warp_rows(frames: list[MotionFrame], faces: list[str]) -> list[tuple[int, str, np.ndarray]]:
    rows = []
    for size in (256, 512):
        for face in faces:
            ms = time_renderer(WarpRenderer(load_avatar(face), size), frames)
            rows.append((size, f"warp, {Path(face).name}", ms))
    return rows


def baseline_rows(rev: str, frames: int, faces: list[str]) -> list[tuple[int, str, np.ndarray]]:
    """This script's warp timing run on the code of commit ``rev`` (a temporary worktree)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, __file__, "--frames", str(frames), "--warp-only",
                   "--faces", ",".join(str(Path(f).resolve()) if Path(f).exists() else f
                                       for f in faces)]  # fmt: skip
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True)
    got = json.loads(out.strip().splitlines()[-1])
    return [(size, f"{name} @ {rev}", np.array(ms)) for size, name, ms in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--gan-avatar", default="carphone")
    parser.add_argument("--faces", default="", help="warp avatars (default: default + Hopper)")
    parser.add_argument("--baseline", default="", help="also time the warp renderer of this commit")
    parser.add_argument("--warp-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = motions(args.frames)
    faces = args.faces.split(",") if args.faces else ["default", _hopper()]
    if args.warp_only:  # the child of --baseline: print the raw timings as JSON
        print(json.dumps([(s, n, ms.tolist()) for s, n, ms in warp_rows(frames, faces)]))
        return
    rows = warp_rows(frames, faces)
    if args.baseline:
        rows += baseline_rows(args.baseline, args.frames, faces)
    default = load_avatar("default")
    for size in (256, 512):
        rows.append((size, "copy (baseline)", time_renderer(CopyRenderer(
            WarpRenderer(default, size).portrait), frames)))  # fmt: skip
        try:
            gan_assets = load_avatar(args.gan_avatar)
            backend = load_gan_backend(gan_assets, RenderConfig(backend="onnxruntime", threads=1))
            gan = GanRenderer(gan_assets, backend, size)
            rows.append((size, "GAN, onnxruntime CPU 1 thread", time_renderer(gan, frames)))
        except Exception as e:  # the bench still reports the warp renderer
            print(f"GAN renderer skipped: {e}")
    print(f"{args.frames} frames per renderer; ms per frame; one thread")
    print("| size | renderer | p50 ms | p95 ms | x copy |")
    print("|---|---|---|---|---|")
    for size, name, ms in sorted(rows, key=lambda r: r[0]):
        copy = next(float(np.median(m)) for s, n, m in rows if s == size and n.startswith("copy"))
        p50 = float(np.median(ms))
        print(f"| {size} | {name} | {p50:.2f} | {np.percentile(ms, 95):.2f} | {p50 / copy:.0f}x |")


def _hopper() -> str:
    from avatar.compose.faces import hopper_avatar

    return hopper_avatar()


if __name__ == "__main__":
    main()
