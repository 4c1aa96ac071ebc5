"""Lookahead ablation: train the same model with 20..80 ms of lookahead, same budget, same data.

Prints one row per lookahead with the metrics on the held-out voices and on human speech (both
after an Opus round trip). Usage:
    python scripts/ablate_lookahead.py --corpus data/corpus --minutes 8 --tokens 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from avatar.config import load_config
from avatar.motion.export import export_onnx
from avatar.motion.model import MotionDims
from avatar.train.motion import TrainSettings, load_corpus, train
from avatar.train.pipeline import evaluate_weights

SETS = ("festival-hts-opus", "espeak-heldout-opus", "human-opus")
METRICS = ("jaw_r", "viseme_acc", "pbm_jaw", "pbm_closed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args()
    cfg = load_config()
    train_set = load_corpus(args.corpus, "train")
    rows = {}
    for tokens in args.tokens:
        dims = dataclasses.replace(MotionDims(), lookahead_tokens=tokens)
        settings = TrainSettings(dims=dims, minutes=args.minutes)
        model, _ = train(train_set, None, settings, progress=False)
        out = args.out / f"lookahead{tokens * 20}"
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(model, cfg.features, out / "motion.onnx")
        metrics = evaluate_weights(
            cfg, args.corpus / "eval", out / "metrics.json", weights=out / "motion.onnx"
        )
        rows[tokens * 20] = metrics["sets"]
        (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    header = " | ".join(f"{s} {m}" for s in SETS for m in METRICS)
    print(f"| lookahead ms | {header} |")
    for ms, sets in rows.items():
        vals = " | ".join(f"{sets[s][m]:.3f}" for s in SETS for m in METRICS)  # type: ignore[index]
        print(f"| {ms} | {vals} |")


if __name__ == "__main__":
    main()
