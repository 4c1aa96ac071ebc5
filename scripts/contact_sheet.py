"""Contact sheet of rendered frames at open vowels, bilabial closures and silence, for people.

Speech the models never trained on (the held-out festival HTS voice if the corpus was built here,
otherwise the aligned human recordings) goes through the engine exactly as `avatar render` runs
it; frames are picked at the middle of /a/-like vowels, of P/B/M and of pauses, and laid out with
labels.
Usage: python scripts/contact_sheet.py [--renderer warp] [--avatar default] [-o docs/img/...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avatar.compose.contact import KINDS, TILE, frame_at, label, pick_times, whole_tile
from avatar.compose.offline import speech_frames
from avatar.config import load_config
from avatar.face.image import save_rgb
from avatar.train.corpus_build import load_utterances
from avatar.train.pipeline import human_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", default="warp")
    parser.add_argument("--avatar", default="default")
    parser.add_argument("--per-row", type=int, default=4)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/img/contact_sheet.png"))
    args = parser.parse_args()
    cfg = load_config(None, [f"render.renderer={args.renderer}", f"render.avatar={args.avatar}"])
    hts = Path("data/corpus/eval/eval-festival-hts-opus.npz")
    utts = load_utterances(hts) if hts.exists() else human_sets()["human-opus"]
    utt = max(utts[:40], key=lambda u: u.duration)
    frames = speech_frames(cfg, utt.audio, utt.sample_rate)
    rows = []
    for kind, visemes in KINDS:
        tiles = []
        for t in pick_times(utt, visemes, args.per_row):
            f = frame_at(frames, t, cfg.motion.fps)
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
