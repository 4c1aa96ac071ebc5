"""Plot predicted vs alignment-derived motion on held-out and human speech (docs/img/*.png).

Usage: python scripts/plot_eval.py [--eval-dir data/corpus/eval] [--out docs/img]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.config import load_config
from avatar.data.types import AlignedUtterance
from avatar.motion.channels import BLENDSHAPE_INDEX
from avatar.motion.runtime import load_motion_backend
from avatar.motion.targets import motion_targets
from avatar.train.corpus_build import load_utterances
from avatar.train.evaluate import predict

CHANNELS = ("jawOpen", "mouthPressLeft", "mouthPucker")


def _panel(ax: plt.Axes, backend: InferenceBackend, utt: AlignedUtterance, fps: float) -> None:
    bs, _ = predict(backend, utt.audio, fps)
    t = np.arange(len(bs)) / fps
    true, _ = motion_targets(utt.phones, t)
    wav_t = np.arange(len(utt.audio)) / utt.sample_rate
    ax.plot(wav_t, 0.5 + 0.5 * utt.audio / (np.abs(utt.audio).max() + 1e-9), color="#bbb", lw=0.4)
    colors = ("C0", "C3", "C2")
    for name, c in zip(CHANNELS, colors, strict=True):
        k = BLENDSHAPE_INDEX[name]
        ax.plot(t, true[:, k], color=c, ls="--", lw=1, label=f"{name} target")
        ax.plot(t, bs[:, k], color=c, lw=1.6, label=f"{name} model")
    for p in utt.phones:
        if p.ipa:
            ax.text((p.start + p.end) / 2, 1.02, p.ipa, ha="center", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{utt.source}: {utt.text[:80]}", fontsize=9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eval-dir", type=Path, default=Path("data/corpus/eval"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    cfg = load_config()
    backend = load_motion_backend(cfg.motion)
    args.out.mkdir(parents=True, exist_ok=True)
    picks: list[AlignedUtterance] = []
    for name in ("festival-hts-opus", "espeak-heldout-opus"):
        path = args.eval_dir / f"eval-{name}.npz"
        if path.exists():
            picks.append(load_utterances(path)[0])
    from avatar.train.pipeline import human_sets

    human = human_sets()["human"]
    by_len = sorted(human, key=lambda u: -len(u.phones))
    picks += by_len[:3]
    fig, axes = plt.subplots(len(picks), 1, figsize=(14, 2.6 * len(picks)))
    for ax, utt in zip(np.atleast_1d(axes), picks, strict=True):
        _panel(ax, backend, utt, cfg.motion.fps)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    out = args.out / "motion_eval.png"
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
