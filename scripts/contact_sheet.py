"""Contact sheet of rendered frames at open vowels, bilabial closures and silence, for people.

Real speech the models never trained on (JFK's "ask not" sentence, public domain, fetched into the
media cache; the aligned Debian recordings where it cannot be had) goes through the engine exactly
as `avatar render` runs it; frames are picked where the middle of /a/-like vowels, of P/B/M and of
pauses *shows* (the mouth leads its sound by ``engine.lead_ms``), and laid out with labels.
Usage: python scripts/contact_sheet.py [--renderer warp] [--avatar default] [-o docs/img/...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avatar.compose.contact import KINDS, TILE, frame_at, label, pick_times, whole_tile
from avatar.compose.offline import speech_frames
from avatar.config import load_config
from avatar.data.sentences import sentence_set
from avatar.errors import AvatarError
from avatar.face.image import save_rgb
from avatar.train.pipeline import human_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", default="warp")
    parser.add_argument("--avatar", default="default")
    parser.add_argument("--per-row", type=int, default=4)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/img/contact_sheet.png"))
    args = parser.parse_args()
    cfg = load_config(None, [f"render.renderer={args.renderer}", f"render.avatar={args.avatar}"])
    try:
        utt = next(u for u in sentence_set("dev") if u.family == "jfk")
    except AvatarError as e:
        print(f"no JFK sentence ({e}); the Debian recordings instead")
        utt = max(human_sets()["human-opus"][:40], key=lambda u: u.duration)
    frames = speech_frames(cfg, utt.audio, utt.sample_rate)
    lead = cfg.engine.lead_ms / 1000
    rows = []
    for kind, visemes in KINDS:
        tiles = []
        for t in pick_times(utt, visemes, args.per_row):
            f = frame_at(frames, t - lead, cfg.motion.fps)
            text = f"{kind} {t:.2f}s jaw {f.motion.blendshapes[0]:.2f}" if f.motion else kind
            tiles.append(label(whole_tile(f.image), text))
        while len(tiles) < args.per_row:
            tiles.append(np.zeros((TILE, TILE, 3), np.uint8))
        rows.append(np.hstack(tiles))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_rgb(args.output, np.vstack(rows))
    print(f"{args.output}: {utt.source} '{utt.text[:60]}'")


if __name__ == "__main__":
    main()
