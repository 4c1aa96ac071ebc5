"""``avatar train motion`` end to end: corpus -> training -> checkpoint + ONNX -> evaluation.

Everything lands in ``--out``: ``motion.pt`` (self-describing checkpoint), ``motion.onnx``,
``train_log.jsonl``, ``metrics.json``. Shipping a model means copying ``motion.pt``,
``motion.onnx`` and ``metrics.json`` into ``avatar/weights/`` and updating its model card.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from avatar.backends.onnxruntime import OrtBackend
from avatar.config import Config, MotionConfig
from avatar.data import augment as aug
from avatar.data.types import AlignedUtterance
from avatar.errors import ConfigError
from avatar.motion.runtime import load_motion_backend
from avatar.train.evaluate import EvalResult, evaluate
from avatar.train.options import MAX_LOOKAHEAD_MS, TrainOptions

if TYPE_CHECKING:
    from avatar.train.motion import TrainSettings

log = logging.getLogger(__name__)

QUICK_DIMS = {"d_model": 48, "n_heads": 2, "n_layers": 1, "d_ff": 96, "window": 50}


def _ensure_corpus(opts: TrainOptions, cfg: Config) -> None:
    from avatar.train.corpus_build import build_corpus, build_eval_sets

    if opts.rebuild:
        shutil.rmtree(opts.corpus, ignore_errors=True)
    if not (opts.corpus / "manifest.json").exists():
        hours = 0.03 if opts.quick else opts.hours
        copies = 1 if opts.quick else opts.copies
        t0 = time.monotonic()
        manifest = build_corpus(
            opts.corpus, hours, copies, opts.seed, cfg.features, opts.processes, opts.quick
        )
        log.warning(
            "corpus: %.2f h in %.0f s; unmapped symbols: %s",
            manifest["hours_total"],
            time.monotonic() - t0,
            manifest["unmapped_symbols"] or "none",
        )
    eval_dir = opts.corpus / "eval"
    if not any(eval_dir.glob("eval-*.npz")):
        build_eval_sets(eval_dir, 4 if opts.quick else 40, opts.seed + 1, opts.quick)


FINE_TUNE_LR = 6e-4  # going on from a trained model: a third of the recipe's peak


def train_settings(opts: TrainOptions) -> TrainSettings:
    """The trainer's settings for ``opts`` (quick mode: a tiny model for tests)."""
    from avatar.motion.model import MotionDims
    from avatar.train.motion import TrainSettings

    if opts.lookahead_ms % 20 or not 0 <= opts.lookahead_ms <= MAX_LOOKAHEAD_MS:
        raise ConfigError(f"lookahead must be a multiple of 20 ms in 0..{MAX_LOOKAHEAD_MS} ms")
    base = MotionDims(**QUICK_DIMS) if opts.quick else MotionDims()
    dims = dataclasses.replace(base, lookahead_tokens=opts.lookahead_ms // 20, dropout=opts.dropout)
    if opts.quick:
        return TrainSettings(
            dims=dims,
            minutes=opts.minutes,
            max_steps=30,
            batch=4,
            crop_tokens=100,
            eval_every=15,
            seed=opts.seed,
        )
    settings = TrainSettings(
        dims=dims,
        minutes=opts.minutes,
        seed=opts.seed,
        freq_masks=2 if opts.spec_augment else 0,
        time_masks=2 if opts.spec_augment and opts.time_masks else 0,
        vtlp=opts.vtlp,
        closure_weight=opts.closure_weight,
        talker_weight=opts.talker_weight if opts.talkers else 0.0,
    )
    if opts.init:
        settings.lr = FINE_TUNE_LR
    return settings


def train_motion_pipeline(opts: TrainOptions, cfg: Config) -> dict[str, object]:
    """Build the corpus if needed, train, save, export and evaluate."""
    import torch

    from avatar.motion.export import export_onnx, model_meta
    from avatar.motion.model import MotionTransformer
    from avatar.train.motion import load_corpus, train
    from avatar.train.talker_corpus import load_talker_corpus

    _ensure_corpus(opts, cfg)
    opts.out.mkdir(parents=True, exist_ok=True)
    settings = train_settings(opts)
    train_set, val_set = load_corpus(opts.corpus, "train"), load_corpus(opts.corpus, "heldout")
    talkers = load_talker_corpus(opts.talkers) if opts.talkers else None
    init = None
    if opts.init:
        init = MotionTransformer.from_checkpoint(torch.load(opts.init, weights_only=False))
    log_path = opts.out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    model, history = train(train_set, val_set, settings, log_path, talkers=talkers, init=init)
    minutes = (time.monotonic() - t0) / 60
    meta = model_meta(model, cfg.features)
    info = {
        "train_minutes": round(minutes, 2),
        "steps": int(history[-1]["step"]),
        "train_frames": train_set.frames,
        "talker_frames": len(talkers.mel) if talkers else 0,
        "init": str(opts.init) if opts.init else None,
        "settings": {k: v for k, v in asdict(settings).items() if k != "dims"},
    }
    torch.save(model.checkpoint({"meta": meta, "train": info}), opts.out / "motion.pt")
    export_onnx(model, cfg.features, opts.out / "motion.onnx")
    metrics = evaluate_weights(
        cfg,
        opts.corpus / "eval",
        opts.out / "metrics.json",
        weights=opts.out / "motion.onnx",
        human=not opts.quick,
    )
    metrics["train"] = info
    (opts.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


HUMAN_CACHE = Path("data/human-align")


def human_sets(cache_dir: Path = HUMAN_CACHE) -> dict[str, list[AlignedUtterance]]:
    """Real human recordings (Debian packages), aligned; clean and after an Opus round trip."""
    from avatar.data.human import human_speech_set

    clean = [aug.resample(u) for u in human_speech_set(cache_dir)]
    opus = [aug.opus_round_trip(u, 24000) for u in clean]
    return {"human": clean, "human-opus": opus}


def evaluate_weights(
    cfg: Config,
    eval_dir: Path,
    output: Path | None,
    weights: Path | None = None,
    human: bool = True,
) -> dict[str, object]:
    """Evaluate the configured (or given) ONNX model on every eval set; print a table."""
    from avatar.train.corpus_build import load_utterances

    mcfg = (
        MotionConfig(**{**cfg.motion.model_dump(), "weights": str(weights)})
        if weights
        else cfg.motion
    )
    backend = load_motion_backend(mcfg)
    sets = {
        p.stem.removeprefix("eval-"): load_utterances(p)
        for p in sorted(eval_dir.glob("eval-*.npz"))
    }
    if not sets:
        log.warning("no held-out sets in %s (avatar train motion builds them)", eval_dir)
    if human:
        sets.update(human_sets())
    results = [evaluate(backend, utts, name, cfg.motion.fps) for name, utts in sets.items()]
    print(format_table(results))
    out: dict[str, object] = {
        "backend": backend.name,
        "fps": cfg.motion.fps,
        "sets": {r.name: r.as_dict() for r in results},
    }
    if isinstance(backend, OrtBackend):
        out["model"] = backend.meta["dims"]
    if output:
        output.write_text(json.dumps(out, indent=1))
    return out


def format_table(results: list[EvalResult]) -> str:
    cols = (
        "seconds",
        "jaw_r",
        "energy_r",
        "viseme_acc",
        "viseme_acc_speech",
        "pbm_jaw",
        "pbm_closed",
        "vowel_jaw",
        "silence_jaw",
    )
    lines = ["| set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in results:
        d = r.as_dict()
        lines.append(
            f"| {r.name} | "
            + " | ".join(f"{d[c]:.1f}" if c == "seconds" else f"{d[c]:.3f}" for c in cols)
            + " |"
        )
    return "\n".join(lines)
