"""Mouth opening measured from rendered pixels vs the phone alignment, on speech never trained on.

Sets: real human speech (Debian recordings, aligned with pocketsphinx, Opus round trip) and, when
the motion corpus has been built here, the held-out festival HTS voice. Writes a JSON summary and a
plot of one utterance. Usage:
    python scripts/eval_render.py [--renderer warp|gan] [--avatar NAME] [--size 512]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from avatar.compose.render_eval import UtteranceTrace, summarise, trace_utterance
from avatar.compose.renderers import load_renderer
from avatar.config import load_config
from avatar.motion.runtime import load_motion_backend
from avatar.train.corpus_build import load_utterances
from avatar.train.pipeline import human_sets


def plot_trace(tr: UtteranceTrace, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=110)
    ax.plot(tr.t, tr.target, label="alignment jawOpen (target)", color="0.6", lw=2)
    ax.plot(tr.t, tr.model, label="model jawOpen", color="tab:blue", lw=1)
    ax2 = ax.twinx()
    ax2.plot(tr.t, tr.gap, label="lip gap from pixels (face mesh)", color="tab:red", lw=1.4)
    ax.set_xlabel("s")
    ax.set_ylabel("jawOpen")
    ax2.set_ylabel("inner-lip gap / inter-ocular")
    ax.set_title(title, fontsize=10)
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", default="warp")
    parser.add_argument("--avatar", default="default")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--eval-dir", type=Path, default=Path("data/corpus/eval"))
    parser.add_argument("--limit", type=int, default=0, help="utterances per set (0 = all)")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/render_eval.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/render_eval.png"))
    args = parser.parse_args()
    overrides = [f"render.renderer={args.renderer}", f"render.avatar={args.avatar}",
                 f"render.size={args.size}"]  # fmt: skip
    cfg = load_config(None, overrides)
    backend = load_motion_backend(cfg.motion)
    sets = {"human-opus": human_sets()["human-opus"]}
    hts = args.eval_dir / "eval-festival-hts-opus.npz"
    if hts.exists():
        sets["festival-hts-opus"] = load_utterances(hts)
    results = {}
    for name, utts in sets.items():
        utts = utts[: args.limit] if args.limit else utts
        traces = []
        for utt in utts:
            renderer = load_renderer(cfg.render)
            traces.append(trace_utterance(cfg, backend, renderer, utt))
        res = summarise(name, args.renderer, traces)
        results[name] = res.as_dict()
        print(json.dumps(results[name]))
        if name == "festival-hts-opus" or len(sets) == 1:
            longest = max(traces, key=lambda tr: len(tr.t))
            plot_trace(
                longest, args.plot, f"{args.renderer} renderer, {name}: rendered mouth vs speech"
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.output.read_text()) if args.output.exists() else {}
    existing[f"{args.renderer}:{args.avatar}"] = results
    args.output.write_text(json.dumps(existing, indent=1) + "\n")


if __name__ == "__main__":
    main()
