"""Teacher against distilled generator(s) of a GAN avatar: speed, held-out error, agreement.

On the motion the engine makes of the bundled speech (``avatar/assets/sample.ogg``), one thread,
onnxruntime CPU, every renderer in the same run, their calls interleaved frame by frame:
ms per frame of the whole GAN render and of the generator call alone; the share of one
streaming motion-model call (40 ms of audio: features + network) beside them; the held-out
mouth L1 each training run reported (``gan*_metrics.json``); PSNR of each variant's renders
against the teacher's (whole frame and the mouth box), on the seconds the distillation saw
(``distill_speech_s``) and on the rest; and a contact sheet of mouths, open and closed:
teacher | variant | |difference| x4.
Usage: python scripts/bench_distill.py [--variants small] [--size 512] [--sheet PNG]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from avatar.audio.io import load_audio
from avatar.compose import quant_check
from avatar.compose.offline import speech_frames
from avatar.compose.renderers import gan_stem, load_gan_backend
from avatar.config import RenderConfig, load_config
from avatar.face import sketch
from avatar.face.image import save_rgb
from avatar.face.store import load_avatar
from avatar.frames import MotionFrame
from avatar.gan.train import RendererTrainOptions
from avatar.motion.channels import BLENDSHAPE_INDEX as BI
from avatar.motion.runtime import load_motion_backend
from avatar.motion.stream import MotionStreamer
from avatar.render.gan import GanRenderer
from avatar.units import ANALYSIS_RATE, OUTPUT_RATE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "avatar" / "assets" / "sample.ogg"
T = TypeVar("T")
HOP = ANALYSIS_RATE * 40 // 1000  # one 40 ms streaming call of the motion model


def speech_motion() -> list[MotionFrame]:
    cfg = load_config(None, ["render.size=128"])
    frames = speech_frames(cfg, load_audio(SAMPLE, rate=OUTPUT_RATE), OUTPUT_RATE)
    return [f.motion for f in frames if f.motion is not None]


def renderers(avatar: str, variants: list[str], size: int) -> dict[str, GanRenderer]:
    assets = load_avatar(avatar)
    out = {}
    for v in ["", *variants]:
        cfg = RenderConfig(backend="onnxruntime", threads=1, gan_variant=v)
        out[gan_stem(cfg)] = GanRenderer(assets, load_gan_backend(assets, cfg), size)
    return out


def generator_inputs(r: GanRenderer, m: MotionFrame) -> dict[str, np.ndarray]:
    w = r.warp.rig.weights(m)
    warped = sketch.to_unit(sketch.crop(r.warp.warp_face(w), r.box, r.crop))
    return {"warped": warped[None], "code": w[None, : r.code].astype(np.float32),
            "sketch": sketch.rig_sketch(r.warp.rig, w, r.box, r.crop)[None]}  # fmt: skip


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t0) * 1000, out


def interleaved(
    rs: dict[str, GanRenderer], motion: list[MotionFrame]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[np.ndarray]]]:
    """ms of the whole render and of the generator call, and the frames, per renderer; the
    order of the renderers rotates every frame."""
    render_ms: dict[str, list[float]] = {k: [] for k in rs}
    gen_ms: dict[str, list[float]] = {k: [] for k in rs}
    images: dict[str, list[np.ndarray]] = {k: [] for k in rs}
    names = list(rs)
    for i, m in enumerate(motion):
        inputs = generator_inputs(rs[names[0]], m)
        for k in names[i % len(names) :] + names[: i % len(names)]:
            ms, img = timed(rs[k].render, m)
            render_ms[k].append(ms)
            images[k].append(img)
            gen_ms[k].append(timed(rs[k].backend.run, inputs)[0])
    return render_ms, gen_ms, images


def motion_call_ms(n: int) -> np.ndarray:
    """One streaming call of the motion model (features + network) per 40 ms of real speech."""
    backend = load_motion_backend(load_config(None, ["motion.backend=onnxruntime"]).motion)
    streamer = MotionStreamer(backend, 25)
    audio = np.tile(load_audio(SAMPLE, rate=ANALYSIS_RATE), 3)
    streamer.push(audio[: ANALYSIS_RATE * 3])  # a full attention cache first
    hops = range(ANALYSIS_RATE * 3, ANALYSIS_RATE * 3 + n * HOP, HOP)
    return np.array([timed(streamer.push, audio[k : k + HOP])[0] for k in hops])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return quant_check.psnr(float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)))


def agreement(
    teacher: list[np.ndarray], other: list[np.ndarray], box: tuple[int, int, int, int], seen: int
) -> dict[str, float]:
    x0, y0, x1, y1 = box
    out = {}
    for part, sl in (("seen", slice(0, seen)), ("unseen", slice(seen, None))):
        pairs = list(zip(teacher[sl], other[sl], strict=True))
        out[f"psnr_{part}"] = float(np.mean([psnr(a, b) for a, b in pairs]))
        out[f"psnr_mouth_{part}"] = float(
            np.mean([psnr(a[y0:y1, x0:x1], b[y0:y1, x0:x1]) for a, b in pairs])
        )
    return out


def contact_sheet(
    images: dict[str, list[np.ndarray]], motion: list[MotionFrame], box: tuple[int, ...]
) -> np.ndarray:
    """Rows: the 3 most open and 3 most closed mouths; columns: teacher, each variant, and
    each variant's |difference| to the teacher x4; mouth box x2."""
    jaw = np.array([m.blendshapes[BI["jawOpen"]] for m in motion])
    order = np.argsort(jaw)
    picks = [*order[-1:-40:-13], *order[:39:13]]
    x0, y0, x1, y1 = box
    names = list(images)
    rows = []
    for i in picks:
        crops = [images[k][i][y0:y1, x0:x1] for k in names]
        diffs = [np.clip(np.abs(c.astype(np.int16) - crops[0]) * 4, 0, 255).astype(np.uint8)
                 for c in crops[1:]]  # fmt: skip
        row = np.hstack([cv2.resize(c, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
                         for c in crops + diffs])  # fmt: skip
        cv2.putText(row, f"t={i / 25:.2f}s jaw={jaw[i]:.2f}", (6, 22),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)  # fmt: skip
        rows.append(row)
    head = np.zeros((30, rows[0].shape[1], 3), np.uint8)
    tile = rows[0].shape[1] // (2 * len(names) - 1)
    for j, label in enumerate(names + [f"|{k}-gan| x4" for k in names[1:]]):
        cv2.putText(head, label, (j * tile + 6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1)  # fmt: skip
    return np.vstack([head, *rows])


def metrics(avatar: str, stem: str) -> dict[str, float]:
    folder = load_avatar(avatar).folder
    assert folder is not None
    report = json.loads((Path(folder) / f"{stem}_metrics.json").read_text())
    return {"held_out_l1": report["held_out_mouth_l1"]["generator"],
            "held_out_l1_warp_fed": report["held_out_mouth_l1"]["generator_fed_warp_only"],
            "params": report["generator_params"], "width": report["options"]["width"],
            "distilled": bool(report["options"].get("distill_from"))}  # fmt: skip


def row(
    name: str, info: dict[str, float], render_ms: list[float], gen_ms: list[float],
    agree: dict[str, float],
) -> str:  # fmt: skip
    psnrs = (f"{agree['psnr_seen']:.1f} / {agree['psnr_unseen']:.1f} | "
             f"{agree['psnr_mouth_seen']:.1f} / {agree['psnr_mouth_unseen']:.1f}")  # fmt: skip
    return (f"| {name} | {info['width']} | {info['params'] / 1e6:.2f} M | {info['distilled']} | "
            f"{info['held_out_l1']:.2f} ({info['held_out_l1_warp_fed']:.2f}) | "
            f"{np.median(render_ms):.2f} | {np.median(gen_ms):.2f} | "
            f"{psnrs if name != 'gan' else '- | -'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="carphone")
    parser.add_argument("--variants", default="small", help="comma-separated gan_variant names")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sheet", type=Path, default=ROOT / "docs/img/gan_small_vs_teacher.png")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    motion = speech_motion()
    rs = renderers(args.avatar, args.variants.split(","), args.size)
    interleaved(rs, motion[:10])  # warm up
    render_ms, gen_ms, images = interleaved(rs, motion)
    motion_ms = motion_call_ms(len(motion))
    seen = int(RendererTrainOptions().distill_speech_s * 25)
    teacher = next(iter(rs.values()))
    print(
        f"{len(motion)} frames of sample.ogg at {args.size}px, 1 thread, onnxruntime CPU, "
        f"interleaved; PSNR on frames < {seen} (the distillation saw their motion) / the rest"
    )
    print(
        "| generator | width | params | distilled | held-out L1 (warp-fed) | render p50 ms "
        "| generator p50 ms | PSNR vs gan seen / unseen | mouth-box PSNR seen / unseen |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k in rs:
        agree = agreement(images["gan"], images[k], teacher.paste_box, seen)
        print(row(k, metrics(args.avatar, k), render_ms[k], gen_ms[k], agree))
    gan = float(np.median(render_ms["gan"]))
    for k in list(rs)[1:]:
        print(f"{k}: render {np.median(render_ms[k]) / gan:.2f}x the teacher's; generator call "
              f"{np.median(gen_ms[k]) / np.median(gen_ms['gan']):.2f}x")  # fmt: skip
    mm = float(np.median(motion_ms))
    print(f"motion model, one streaming call (40 ms of audio, features + network): p50 {mm:.3f} "
          f"ms = {mm / (mm + gan):.1%} of motion + teacher render ({gan:.2f} ms)")  # fmt: skip
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    save_rgb(args.sheet, contact_sheet(images, motion, teacher.paste_box))
    print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
