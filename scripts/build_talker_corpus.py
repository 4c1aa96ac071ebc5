"""Real talkers -> training shards for the motion model's jaw (``avatar/train/talker_corpus.py``).

Reads a manifest (JSON list of {"file": path relative to it, "who": speaker, ...}) of videos of
people talking with their own sound and writes ``talkers-*.npz`` shards.
Usage: python scripts/build_talker_corpus.py MANIFEST.json OUT_DIR [--include PREFIX ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avatar.config import load_config
from avatar.train.talker_corpus import TalkerVideo, build_talker_corpus


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--include", nargs="*", default=[], help="only files under these folders")
    args = p.parse_args()
    entries = json.loads(args.manifest.read_text())
    videos = [
        TalkerVideo(args.manifest.parent / e["file"], e.get("who", e["file"]))
        for e in entries
        if not args.include or any(e["file"].startswith(f"{i}/") for i in args.include)
    ]
    print(json.dumps(build_talker_corpus(videos, args.out, load_config(None, []).features)))


if __name__ == "__main__":
    main()
