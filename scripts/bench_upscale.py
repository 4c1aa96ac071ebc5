"""How should an offline render make video larger than the avatar's portrait? Upscale or render?

Candidates for a frame bigger than the portrait's native size:
  A  render at native size, resize each frame with cv2 INTER_LANCZOS4
  B  the same with INTER_CUBIC
  C  the same with INTER_LINEAR
  D  Lanczos, then a fixed unsharp mask (Gaussian sigma 1.0 px, amount 0.5)
  E  render directly at the target size (``WarpRenderer(assets, size=target)``)

The proxy: nothing above the portrait's size exists to compare with, so everything is measured
one octave down. Ground truth = the clip rendered directly at the avatar's native size (E at
native); A-D render the same clip at half that size and upscale it x2. PSNR and SSIM (RGB, 0-255)
are taken over the mouth box (avatar.json ``mouth_box``) and the whole frame, averaged over every
frame of the first seconds of the bundled speech clip (``avatar/assets/sample.ogg``) rendered by
the real engine chain (:func:`avatar.compose.offline.speech_frames`), for the ``default`` avatar
(warp renderer) and ``carphone`` (GAN renderer). E is the ground truth itself there, so for E the
cost is reported instead: rendering at 1024 against a native render plus Lanczos to 1024.
Native sizes differ: ``default`` is 512 (proxy 256 -> 512, Lanczos x2 to 1024), ``carphone`` 256
(proxy 128 -> 256, Lanczos x4 to 1024). At 1024 itself, where no truth exists, the agreement of
A and B with E is scored too (how different upscaling and rendering at size look, not which is
better).
Times are ms per frame on one thread (``cv2.setNumThreads(1)``): each upscale step 512 -> 1024,
and the renderers at native size and at 1024.

Outputs: a table on stdout, ``docs/upscale.json`` and a mouth crop sheet (A, B, D, ground truth)
at ``/tmp/upscale_sheet.png``.
Usage: python scripts/bench_upscale.py [--seconds 4] [--reps 30] [-o docs/upscale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from avatar.audio.io import load_audio
from avatar.compose.offline import speech_frames
from avatar.compose.renderers import load_renderer
from avatar.config import Config, load_config
from avatar.face.image import save_rgb
from avatar.face.store import load_avatar
from avatar.frames import MotionFrame
from avatar.render.base import Renderer
from avatar.units import OUTPUT_RATE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "avatar/assets/sample.ogg"
AVATARS = (("default", "warp"), ("carphone", "gan"))
TARGET = 1024  # the size the cost comparison is made at
UNSHARP_SIGMA, UNSHARP_AMOUNT = 1.0, 0.5

Upscaler = Callable[[np.ndarray, int], np.ndarray]


def _resize(interp: int) -> Upscaler:
    def up(image: np.ndarray, size: int) -> np.ndarray:
        return np.asarray(cv2.resize(image, (size, size), interpolation=interp))

    return up


def lanczos_unsharp(image: np.ndarray, size: int) -> np.ndarray:
    """Lanczos, then ``up + amount * (up - blur(up))`` at the output size."""
    up = cv2.resize(image, (size, size), interpolation=cv2.INTER_LANCZOS4)
    blur = cv2.GaussianBlur(up, (0, 0), UNSHARP_SIGMA)
    return np.asarray(cv2.addWeighted(up, 1 + UNSHARP_AMOUNT, blur, -UNSHARP_AMOUNT, 0))


UPSCALERS: dict[str, Upscaler] = {
    "A lanczos": _resize(cv2.INTER_LANCZOS4),
    "B cubic": _resize(cv2.INTER_CUBIC),
    "C linear": _resize(cv2.INTER_LINEAR),
    "D lanczos+unsharp": lanczos_unsharp,
}


def speech(seconds: float) -> np.ndarray:
    return load_audio(SAMPLE, rate=OUTPUT_RATE)[: int(seconds * OUTPUT_RATE)]


def avatar_config(avatar: str, renderer: str, size: int) -> Config:
    return load_config(None, [f"render.avatar={avatar}", f"render.renderer={renderer}",
                              f"render.size={size}"])  # fmt: skip


def render_clip(
    avatar: str, renderer: str, size: int, audio: np.ndarray
) -> tuple[list[np.ndarray], list[MotionFrame]]:
    """Every frame of ``audio`` through the engine at ``size``: images and their motion."""
    cfg = avatar_config(avatar, renderer, size)
    frames = speech_frames(cfg, audio, OUTPUT_RATE, renderer=load_renderer(cfg.render))
    motions = [f.motion for f in frames if f.motion is not None]
    assert len(motions) == len(frames), "every offline frame carries its motion"
    return [f.image for f in frames], motions


def same_motion(a: list[MotionFrame], b: list[MotionFrame]) -> bool:
    """The two renders show the same face: the engine is deterministic, so this must hold."""
    return len(a) == len(b) and all(
        np.array_equal(x.blendshapes, y.blendshapes) and np.array_equal(x.visemes, y.visemes)
        for x, y in zip(a, b, strict=True)
    )


def mouth_box(avatar: str, size: int) -> tuple[slice, slice]:
    """avatar.json's mouth box (portrait pixels) at ``size``, as (rows, columns)."""
    assets = load_avatar(avatar)
    s = size / assets.size
    x0, y0, x1, y1 = (round(v * s) for v in assets.info["mouth_box"])
    return slice(y0, y1), slice(x0, x1)


def scores(truth: list[np.ndarray], test: list[np.ndarray], box: tuple[slice, slice]) -> dict:
    """Mean PSNR (dB) and SSIM over frames, mouth box and whole frame."""
    rows: dict[str, list[float]] = {k: [] for k in ("psnr_mouth", "ssim_mouth", "psnr", "ssim")}
    for t, x in zip(truth, test, strict=True):
        for suffix, (a, b) in (("_mouth", (t[box], x[box])), ("", (t, x))):
            rows["psnr" + suffix].append(peak_signal_noise_ratio(a, b, data_range=255))
            rows["ssim" + suffix].append(
                structural_similarity(a, b, data_range=255, channel_axis=2)
            )
    return {k: round(float(np.mean(v)), 4) for k, v in rows.items()}


def quality(avatar: str, renderer: str, audio: np.ndarray) -> tuple[dict, dict]:
    """Scores of A-D (half size, x2) against the native render; and the crops for the sheet."""
    native = load_avatar(avatar).size
    truth, m_truth = render_clip(avatar, renderer, native, audio)
    low, m_low = render_clip(avatar, renderer, native // 2, audio)
    if not same_motion(m_truth, m_low):
        sys.exit(f"{avatar}: the two renders' motion differs; the proxy needs identical motion")
    box = mouth_box(avatar, native)
    out: dict[str, Any] = {"native": native, "low": native // 2, "frames": len(truth)}
    ups = {}
    for name, up in UPSCALERS.items():
        ups[name] = [up(f, native) for f in low]
        out[name] = scores(truth, ups[name], box)
    pick = _busiest_mouth(truth, box)
    crops = {name: ups[name][pick][box] for name in ("A lanczos", "B cubic", "D lanczos+unsharp")}
    crops["E ground truth"] = truth[pick][box]
    out["sheet_frame"] = pick
    return out, crops


def agreement(avatar: str, renderer: str, audio: np.ndarray, every: int = 4) -> dict:
    """At TARGET itself (no ground truth there): how close A and B come to E, scored like the
    proxy on every ``every``-th frame. High = upscaling and rendering at size look alike."""
    native = load_avatar(avatar).size
    small, m_small = render_clip(avatar, renderer, native, audio)
    big, m_big = render_clip(avatar, renderer, TARGET, audio)
    if not same_motion(m_small, m_big):
        sys.exit(f"{avatar}: the two renders' motion differs")
    small, big = small[::every], big[::every]
    box = mouth_box(avatar, TARGET)
    return {
        name: scores(big, [UPSCALERS[name](f, TARGET) for f in small], box)
        for name in ("A lanczos", "B cubic")
    }


def _busiest_mouth(frames: list[np.ndarray], box: tuple[slice, slice]) -> int:
    """The frame whose mouth is farthest from the first (an open mouth: teeth, lips, cavity)."""
    first = frames[0][box].astype(np.float32)
    return int(np.argmax([np.abs(f[box].astype(np.float32) - first).mean() for f in frames]))


def time_ms(fn: Callable[[], object], reps: int) -> float:
    """Median ms of ``fn`` after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 3)


def upscale_costs(frame: np.ndarray, reps: int) -> dict[str, float]:
    """ms per frame of each upscale step from ``frame`` (512) to TARGET."""
    return {name: time_ms(partial(up, frame, TARGET), reps) for name, up in UPSCALERS.items()}


def render_ms(renderer: Renderer, motions: list[MotionFrame]) -> float:
    """Median ms per frame of ``renderer`` over ``motions`` (one warm-up pass of a few)."""
    for m in motions[:3]:
        renderer.render(m)
    times = []
    for m in motions:
        t0 = time.perf_counter()
        renderer.render(m)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1000, 3)


def render_costs(avatar: str, renderer: str, motions: list[MotionFrame]) -> dict[str, float]:
    """E at TARGET against the native render + Lanczos to TARGET, ms per frame."""
    native = load_avatar(avatar).size
    r_native = load_renderer(avatar_config(avatar, renderer, native).render)
    r_big = load_renderer(avatar_config(avatar, renderer, TARGET).render)
    frame = r_native.render(motions[0])
    lanczos = time_ms(partial(UPSCALERS["A lanczos"], frame, TARGET), 20)
    native_ms = render_ms(r_native, motions)
    return {
        f"render_{native}": native_ms,
        f"lanczos_{native}_to_{TARGET}": lanczos,
        f"A_render_{native}_plus_lanczos": round(native_ms + lanczos, 3),
        f"E_render_{TARGET}": render_ms(r_big, motions),
    }


def _tile(crop: np.ndarray, text: str) -> np.ndarray:
    """``crop`` enlarged to about 580 px wide (nearest: pixels stay visible), labelled."""
    scale = max(1, 580 // crop.shape[1])
    tile = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    tile = cv2.copyMakeBorder(tile, 28, 4, 4, 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    cv2.putText(tile, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    return np.asarray(tile)


def _stack(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate along ``axis`` (1: side by side, 0: top to bottom), zero-padding the other."""
    other = 1 - axis
    extent = max(im.shape[other] for im in images)
    padded = []
    for im in images:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[other] = (0, extent - im.shape[other])
        padded.append(np.pad(im, pad))
    return np.concatenate(padded, axis=axis)


def save_sheet(crops_by_avatar: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """One row per avatar: the A, B, D and ground-truth mouth crops of one frame."""
    rows = [
        _stack([_tile(crop, f"{avatar}: {name}") for name, crop in crops.items()], axis=1)
        for avatar, crops in crops_by_avatar.items()
    ]
    save_rgb(path, _stack(rows, axis=0))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_table(results: dict[str, Any]) -> None:
    print(f"\nquality, proxy: half-size render x2 vs native render ({results['seconds']} s clip)")
    print(f"{'avatar':10} {'candidate':20} {'PSNR mouth':>10} {'SSIM mouth':>10} "
          f"{'PSNR frame':>10} {'SSIM frame':>10}")  # fmt: skip
    for avatar, q in results["quality"].items():
        for name in UPSCALERS:
            s = q[name]
            print(f"{avatar:10} {name:20} {s['psnr_mouth']:10.2f} {s['ssim_mouth']:10.4f} "
                  f"{s['psnr']:10.2f} {s['ssim']:10.4f}")  # fmt: skip
    print(f"\nagreement at {TARGET}: native render upscaled vs E (rendered at {TARGET}):")
    for avatar, q in results["agreement_at_1024"].items():
        for name, s in q.items():
            print(f"{avatar:10} {name:20} {s['psnr_mouth']:10.2f} {s['ssim_mouth']:10.4f} "
                  f"{s['psnr']:10.2f} {s['ssim']:10.4f}")  # fmt: skip
    print(f"\nupscale step 512 -> {TARGET}, ms/frame (1 thread):")
    for name, ms in results["upscale_ms_512_to_1024"].items():
        print(f"  {name:20} {ms:8.2f}")
    print(f"\nrender cost at {TARGET}, ms/frame (1 thread):")
    for avatar, costs in results["render_ms"].items():
        print(f"  {avatar:10} " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="first seconds of sample.ogg")
    parser.add_argument("--reps", type=int, default=30, help="timing repetitions per upscaler")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/upscale.json")
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/upscale_sheet.png"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    audio = speech(args.seconds)
    results: dict[str, Any] = {"quality": {}, "render_ms": {}, "agreement_at_1024": {}}
    crops = {}
    for avatar, renderer in AVATARS:
        results["quality"][avatar], crops[avatar] = quality(avatar, renderer, audio)
    default_512, motions = render_clip("default", "warp", 512, audio)
    results["upscale_ms_512_to_1024"] = upscale_costs(default_512[len(default_512) // 2], args.reps)
    for avatar, renderer in AVATARS:
        results["render_ms"][avatar] = render_costs(avatar, renderer, motions)
        results["agreement_at_1024"][avatar] = agreement(avatar, renderer, audio)
    results |= {
        "seconds": args.seconds,
        "renderers": dict(AVATARS),
        "unsharp": {"sigma": UNSHARP_SIGMA, "amount": UNSHARP_AMOUNT},
        "cpu": cpu_model(),
        "threads": 1,
        "command": " ".join(["python", *sys.argv]),
    }
    print_table(results)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    save_sheet(crops, args.sheet)
    print(f"\n{args.output}, {args.sheet}")


if __name__ == "__main__":
    main()
