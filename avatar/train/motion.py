"""Train the audio-to-motion transformer on a corpus built by :mod:`avatar.train.corpus_build`.

Batches are random crops of ``crop_tokens`` 20 ms tokens from the concatenated corpus frames,
each run from a fresh streaming state (as a stream starts), long enough (default 6 s vs a 2 s
attention window) that most tokens are trained with a full context. Token ``n`` of a crop is
trained against the targets at ``lookahead`` before its end.

Loss: weighted L1 on blendshapes (jaw and lip closure count most), L1 on their frame-to-frame
change (no jitter, no lag), and cross-entropy on the viseme label.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from avatar.motion.channels import BLENDSHAPE_INDEX, BLENDSHAPES, VISEME_INDEX
from avatar.motion.model import MotionDims, MotionTransformer
from avatar.train.talker_corpus import TalkerFrames

PP_INDEX = VISEME_INDEX["PP"]
CHANNEL_WEIGHTS = {
    "jawOpen": 4.0,
    "mouthClose": 2.0,
    "mouthPressLeft": 2.0,
    "mouthPressRight": 2.0,
    "mouthPucker": 2.0,
    "mouthFunnel": 2.0,
    "mouthRollLower": 1.5,
}


@dataclass(slots=True)
class Corpus:
    """Concatenated frames of every shard of one split."""

    mel: np.ndarray  # (N, n_mels) float16
    blendshapes: np.ndarray  # (N, nb) float16
    visemes: np.ndarray  # (N,) int8

    @property
    def frames(self) -> int:
        return len(self.mel)


def load_corpus(folder: Path, split: str) -> Corpus:
    """Load ``folder/<split>-*.npz`` (``train`` or ``heldout``)."""
    files = sorted(folder.glob(f"{split}-*.npz"))
    if not files:
        raise FileNotFoundError(f"no {split} shards in {folder}; build the corpus first")
    parts = [np.load(f) for f in files]
    return Corpus(
        np.concatenate([p["mel"] for p in parts]),
        np.concatenate([p["blendshapes"] for p in parts]),
        np.concatenate([p["visemes"] for p in parts]),
    )


@dataclass(slots=True)
class TrainSettings:
    dims: MotionDims = field(default_factory=MotionDims)
    minutes: float = 25.0
    max_steps: int = 100_000
    batch: int = 16
    crop_tokens: int = 300
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.01
    vis_weight: float = 0.3
    velocity_weight: float = 2.0
    seed: int = 0
    threads: int = 2
    eval_every: int = 250
    freq_masks: int = 0  # SpecAugment: masks of up to freq_width mel bins per crop
    freq_width: int = 10
    time_masks: int = 0  # and of up to time_width 10 ms frames
    time_width: int = 6
    closure_weight: float = 1.0  # loss weight of P/B/M frames (lips must really meet there)
    vtlp: float = 0.0  # vocal tract length perturbation: warp frequencies by 1 +- vtlp per crop
    talker_weight: float = 0.0  # loss weight of real talkers' jaw (talker_corpus), if given
    talker_batch: int = 8


def crops(
    frames: int, batch: int, s: TrainSettings, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless random crops of a corpus of ``frames`` mel frames: (mel indices (B, 2T), target
    indices (B, T)). Token n ends at frame fpt*n + fpt-1 of the crop; its target is the
    ``lookahead`` earlier."""
    fpt = s.dims.frames_per_token
    span = s.crop_tokens * fpt
    lookahead = fpt * s.dims.lookahead_tokens  # in frames
    mel_off = np.arange(span)
    tgt_off = fpt * np.arange(s.crop_tokens) + (fpt - 1) - lookahead
    while True:
        starts = rng.integers(lookahead, frames - span, size=batch) // fpt * fpt
        yield starts[:, None] + mel_off, starts[:, None] + tgt_off


def batches(
    corpus: Corpus, s: TrainSettings, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless random crops: mel (B, 2T, n_mels), blendshape targets (B, T, nb), labels (B, T)."""
    for mel_at, tgt in crops(corpus.frames, s.batch, s, rng):
        yield (
            torch.from_numpy(corpus.mel[mel_at].astype(np.float32)),
            torch.from_numpy(corpus.blendshapes[tgt].astype(np.float32)),
            torch.from_numpy(corpus.visemes[tgt].astype(np.int64)),
        )


def talker_batches(
    talkers: TalkerFrames, s: TrainSettings, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless random crops of real talkers: mel (B, 2T, n_mels), jaw (B, T), valid (B, T)."""
    for mel_at, tgt in crops(len(talkers.mel), s.talker_batch, s, rng):
        yield (
            torch.from_numpy(talkers.mel[mel_at].astype(np.float32)),
            torch.from_numpy(talkers.jaw[tgt].astype(np.float32)),
            torch.from_numpy(talkers.valid[tgt].astype(np.float32)),
        )


def _mel_centres_hz(n_mels: int, fmin: float = 50.0, fmax: float = 7600.0) -> np.ndarray:
    mel = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    return 700 * (10 ** (mel[1:-1] / 2595) - 1)


def warp_frequencies(mel: torch.Tensor, max_warp: float) -> torch.Tensor:
    """VTLP on log-mel frames: each crop's spectrum is read at ``f / alpha``, alpha drawn in
    ``1 +- max_warp``: the same speech from a longer or shorter vocal tract (Jaitly & Hinton 2013).
    """
    if max_warp <= 0:
        return mel
    b, _, n = mel.shape
    centres = _mel_centres_hz(n)
    alphas = 1 + (torch.rand(b).numpy() * 2 - 1) * max_warp  # torch RNG: seeded by train()
    out = torch.empty_like(mel)
    for i, alpha in enumerate(alphas):
        pos = np.interp(centres / alpha, centres, np.arange(n))  # fractional source bins
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = torch.from_numpy((pos - lo).astype(np.float32))
        out[i] = mel[i][:, lo] * (1 - w) + mel[i][:, hi] * w
    return out


def spec_augment(mel: torch.Tensor, s: TrainSettings) -> torch.Tensor:
    """Mask random mel bands and short stretches of time with the crop's mean (Park et al.)."""
    if not (s.freq_masks or s.time_masks):
        return mel
    mel = mel.clone()
    b, t, f = mel.shape
    fill = mel.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    for axis, count, width, size in (
        (2, s.freq_masks, s.freq_width, f),
        (1, s.time_masks, s.time_width, t),
    ):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b, 1, 1))
            start = (torch.rand(b, 1, 1) * (size - w)).long()
            pos = torch.arange(size).view(*((1, 1, -1) if axis == 2 else (1, -1, 1)))
            mask = (pos >= start) & (pos < start + w)
            mel = torch.where(mask, fill, mel)
    return mel


def channel_weights() -> torch.Tensor:
    w = torch.ones(len(BLENDSHAPES))
    for name, value in CHANNEL_WEIGHTS.items():
        w[BLENDSHAPE_INDEX[name]] = value
    return w / w.mean()


def loss_fn(
    model: MotionTransformer,
    batch: tuple[torch.Tensor, ...],
    s: TrainSettings,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    mel, bs_true, vis_true = batch
    if model.training:
        mel = spec_augment(warp_frequencies(mel, s.vtlp), s)
    bs, logits = model.training_outputs(mel)
    frame_w = 1 + (s.closure_weight - 1) * (vis_true == PP_INDEX).float()[..., None]  # (B, T, 1)
    l1 = ((bs - bs_true).abs() * weights * frame_w).mean()
    vel = ((bs.diff(dim=1) - bs_true.diff(dim=1)).abs() * weights).mean()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), vis_true.reshape(-1))
    total = l1 + s.velocity_weight * vel + s.vis_weight * ce
    return total, {"l1": l1.item(), "vel": vel.item(), "ce": ce.item()}


def talker_loss(
    model: MotionTransformer, batch: tuple[torch.Tensor, ...], s: TrainSettings
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 on ``jawOpen`` (and its frame-to-frame change) where a real talker's face was seen."""
    mel, jaw_true, valid = batch
    if model.training:
        mel = spec_augment(warp_frequencies(mel, s.vtlp), s)
    jaw = model.training_outputs(mel)[0][..., BLENDSHAPE_INDEX["jawOpen"]]  # (B, T)
    n = valid.sum().clamp(min=1.0)
    l1 = ((jaw - jaw_true).abs() * valid).sum() / n
    both = valid[:, 1:] * valid[:, :-1]
    vel = ((jaw.diff(dim=1) - jaw_true.diff(dim=1)).abs() * both).sum() / both.sum().clamp(min=1.0)
    return l1 + s.velocity_weight * vel, {"talker_l1": l1.item()}


def _lr(step: int, total: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = min((step - s.warmup) / max(total - s.warmup, 1), 1.0)
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def validate(
    model: MotionTransformer, corpus: Corpus, s: TrainSettings, n: int = 4
) -> dict[str, float]:
    model.eval()
    rng = np.random.default_rng(1234)
    gen = batches(corpus, s, rng)
    w = channel_weights()
    logs = [loss_fn(model, next(gen), s, w)[1] for _ in range(n)]
    model.train()
    return {k: float(np.mean([x[k] for x in logs])) for k in logs[0]}


def fit_normalisation(model: MotionTransformer, corpus: Corpus) -> None:
    """Fixed per-bin mean/std of the training corpus, stored in the model (never per stream)."""
    sample = corpus.mel[:: max(corpus.frames // 200_000, 1)].astype(np.float64)
    model.mel_mean.copy_(torch.from_numpy(sample.mean(0)).float())
    model.mel_std.copy_(torch.from_numpy(sample.std(0) + 1e-3).float())


def train(
    train_set: Corpus,
    val_set: Corpus | None,
    s: TrainSettings,
    log_path: Path | None = None,
    progress: bool = True,
    talkers: TalkerFrames | None = None,
    init: MotionTransformer | None = None,
) -> tuple[MotionTransformer, list[dict[str, float]]]:
    """Train for ``s.minutes`` of wall time or ``s.max_steps``; returns the model and history.
    ``talkers``: real talkers' jaw as well (weight ``s.talker_weight``); ``init``: a trained
    model to go on from (fine-tuning: its weights and its feature normalisation)."""
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    model = MotionTransformer(s.dims)
    if init is not None:
        model.load_state_dict(init.state_dict())
    else:
        fit_normalisation(model, train_set)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    weights = channel_weights()
    gen = batches(train_set, s, np.random.default_rng(s.seed))
    real = talker_batches(talkers, s, np.random.default_rng(s.seed + 1)) if talkers else None
    history: list[dict[str, float]] = []
    t0 = time.monotonic()
    budget = s.minutes * 60
    est_total = s.max_steps
    bar = tqdm(total=s.max_steps, disable=not progress, desc="train motion", unit="step")
    step = 0
    model.train()
    while step < s.max_steps and time.monotonic() - t0 < budget:
        if step and step % 50 == 0:  # the steps that fit the time budget (the LR schedule),
            per_step = (time.monotonic() - t0) / step  # re-estimated as the machine's load moves
            est_total = min(s.max_steps, int(budget / per_step))
            bar.total = est_total
        for g in opt.param_groups:
            g["lr"] = _lr(step, est_total, s)
        loss, logs = loss_fn(model, next(gen), s, weights)
        if real is not None:
            extra, talker_logs = talker_loss(model, next(real), s)
            loss = loss + s.talker_weight * extra
            logs.update(talker_logs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f"{logs['l1']:.4f}", ce=f"{logs['ce']:.3f}")
        if val_set is not None and (step % s.eval_every == 0):
            val = validate(model, val_set, s)
            entry = {
                "step": step,
                "minutes": (time.monotonic() - t0) / 60,
                **logs,
                **{f"val_{k}": v for k, v in val.items()},
            }
            history.append(entry)
            if log_path:
                with log_path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
    bar.close()
    history.append({"step": step, "minutes": (time.monotonic() - t0) / 60, "final": 1.0})
    return model.eval(), history
