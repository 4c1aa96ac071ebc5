"""Lookahead ablation: the same model and recipe with different lookaheads, same data and budget.

Prints one row per lookahead with the metrics on the held-out voices and on human speech (after an
Opus round trip). Usage:
    python scripts/ablate_lookahead.py --corpus data/corpus --minutes 8 --ms 20 60 80
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from avatar.config import load_config
from avatar.motion.export import export_onnx
from avatar.train.motion import load_corpus, train
from avatar.train.options import TrainOptions
from avatar.train.pipeline import evaluate_weights, train_settings

SETS = ("festival-hts-opus", "espeak-heldout-opus", "human-opus")
METRICS = ("jaw_r", "viseme_acc_speech", "pbm_jaw", "pbm_closed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--ms", type=int, nargs="+", default=[20, 60, 80])
    args = parser.parse_args()
    cfg = load_config()
    train_set = load_corpus(args.corpus, "train")
    base = TrainOptions(corpus=args.corpus, out=args.out, minutes=args.minutes)
    rows: dict[int, dict[str, Any]] = {}
    for ms in args.ms:
        settings = train_settings(dataclasses.replace(base, lookahead_ms=ms))
        model, history = train(train_set, None, settings, progress=False)
        out = args.out / f"lookahead{ms}"
        out.mkdir(parents=True, exist_ok=True)
        export_onnx(model, cfg.features, out / "motion.onnx")
        metrics = evaluate_weights(
            cfg, args.corpus / "eval", out / "metrics.json", weights=out / "motion.onnx"
        )
        by_set = metrics["sets"]
        assert isinstance(by_set, dict)  # set name -> its metrics
        rows[ms] = {"steps": history[-1]["step"], **by_set}
        (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    header = " | ".join(f"{s} {m}" for s in SETS for m in METRICS)
    print(f"| lookahead | steps | {header} |")
    for ms, sets in rows.items():
        vals = " | ".join(f"{sets[s][m]:.3f}" for s in SETS for m in METRICS)
        print(f"| {ms} ms | {sets['steps']} | {vals} |")


if __name__ == "__main__":
    main()
