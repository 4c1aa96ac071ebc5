"""``avatar train renderer VIDEO -o avatars/NAME/``: learn one person's mouth from a video.

Losses need no downloaded weights: L1 (weighted x5 inside the mouth box), hinge adversarial from a
per-frame and a temporal PatchGAN, discriminator feature matching, and an L1 on frame-to-frame
changes. Every ``holdout_every``-th frame is held out; the report compares the generator on them
with two baselines: copying the reference crop, and retrieving the training frame whose
motion code is nearest (the strong one). The generator is given that retrieved crop as well and
learns to correct it towards the exact lip shape of the sketch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from avatar.face.image import save_rgb
from avatar.face.prepare import draw_preview, regions
from avatar.face.store import AvatarAssets, save_avatar
from avatar.gan import sketch
from avatar.gan.bank import MouthBank
from avatar.gan.data import VideoFaceData, crops_and_sketches, load_video_faces
from avatar.gan.discriminator import PatchDiscriminator
from avatar.gan.export import export_generator
from avatar.gan.generator import GeneratorDims, MouthGenerator


@dataclass(frozen=True)
class RendererTrainOptions:
    size: int = 64  # mouth crop side fed to the generator
    portrait: int = 256  # avatar portrait side
    steps: int = 2400
    minutes: float = 22.0  # stop early when this runs out
    batch: int = 8  # pairs of consecutive frames
    width: int = 24  # generator channels at full resolution
    lr: float = 2e-4
    l1: float = 40.0
    mouth_weight: float = 5.0
    fm: float = 2.0
    adv: float = 0.5
    temporal: float = 10.0
    holdout_every: int = 5
    seed: int = 0
    threads: int = 2


@dataclass(slots=True)
class Tensors:
    target: torch.Tensor  # (N, 3, S, S)
    sketch: torch.Tensor  # (N, 2, S, S)
    code: torch.Tensor  # (N, 17)
    reference: torch.Tensor  # (3, S, S)
    weight: torch.Tensor  # (N, 1, S, S) L1 weight, high in the mouth box
    context: torch.Tensor  # (N, 3, S, S) the crop with the region to paint blanked
    region: np.ndarray  # (N, S, S) bool: the painted region, where the metric is taken


def to_tensors(data: VideoFaceData, opts: RendererTrainOptions) -> Tensors:
    target, sk, code, ref = crops_and_sketches(data, opts.size)
    region = sk[:, -1] > 0
    weight = np.where(region[:, None], opts.mouth_weight, 1.0).astype(np.float32)
    ctx = np.stack([sketch.context(c, s) for c, s in zip(target, sk, strict=True)])
    t = torch.from_numpy
    return Tensors(t(target), t(sk), t(code), t(ref), t(weight), t(ctx), region)


def split(n: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    test = idx % every == every // 2
    return idx[~test], idx[test]


def mouth_l1(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute difference inside the painted region, 0..255; a, b (3, S, S) in [-1, 1].

    The generator never sees these pixels of the frame (they are blanked in its context)."""
    return float(np.abs(a - b)[:, region].mean() * 127.5)


def _position(pool: np.ndarray, i: int) -> int | None:
    hit = np.flatnonzero(pool == i)
    return int(hit[0]) if len(hit) else None


class Trainer:
    def __init__(self, tensors: Tensors, train_idx: np.ndarray, opts: RendererTrainOptions):
        self.t, self.opts = tensors, opts
        self.train_idx = train_idx
        self.pairs = np.array([i for i in train_idx[1:] if i - 1 in set(train_idx.tolist())])
        self.g = MouthGenerator(
            GeneratorDims(size=opts.size, code=tensors.code.shape[1], width=opts.width)
        )
        # retrieval: for every frame, the nearest *other* training frame by motion code
        self.bank = MouthBank(tensors.code[train_idx].numpy(), tensors.target[train_idx].numpy())
        self.nearest = np.array([
            train_idx[self.bank.nearest(c, exclude=_position(train_idx, i))]
            for i, c in enumerate(tensors.code.numpy())
        ])  # fmt: skip
        self.d = PatchDiscriminator(6)
        self.dt = PatchDiscriminator(12)
        betas = (0.5, 0.99)
        self.opt_g = torch.optim.Adam(self.g.parameters(), opts.lr, betas=betas)
        self.opt_d = torch.optim.Adam(
            [*self.d.parameters(), *self.dt.parameters()], opts.lr, betas=betas
        )
        self.rng = np.random.default_rng(opts.seed)

    def _batch(self) -> tuple[torch.Tensor, ...]:
        i = torch.from_numpy(self.rng.choice(self.pairs, self.opts.batch))
        both = torch.cat([i - 1, i])  # previous frames, then the frames
        t = self.t
        ref = t.reference[None].expand(len(both), -1, -1, -1)
        got = t.target[torch.from_numpy(self.nearest[both.numpy()])]
        return (
            t.target[both],
            t.sketch[both],
            t.code[both],
            ref,
            got,
            t.context[both],
            t.weight[both],
        )

    def step(self) -> dict[str, float]:
        target, sk, code, ref, got, ctx, weight = self._batch()
        (fake,) = self.g(ref, got, ctx, sk, code)
        b = self.opts.batch
        # discriminators: hinge loss
        real_t = torch.cat([target[:b], target[b:], sk[:b], sk[b:]], 1)
        fake_t = torch.cat([fake[:b], fake[b:], sk[:b], sk[b:]], 1)
        d_real, _ = self.d(torch.cat([target, sk], 1))
        d_fake, _ = self.d(torch.cat([fake.detach(), sk], 1))
        dt_real, _ = self.dt(real_t)
        dt_fake, _ = self.dt(fake_t.detach())
        loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean()
                     for r, f in ((d_real, d_fake), (dt_real, dt_fake)))  # fmt: skip
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()  # type: ignore[union-attr]
        self.opt_d.step()
        # generator
        g_fake, feats_fake = self.d(torch.cat([fake, sk], 1))
        gt_fake, feats_fake_t = self.dt(fake_t)
        with torch.no_grad():
            _, feats_real = self.d(torch.cat([target, sk], 1))
            _, feats_real_t = self.dt(real_t)
        adv = -g_fake.mean() - gt_fake.mean()
        pairs = zip(feats_fake + feats_fake_t, feats_real + feats_real_t, strict=True)
        fm = sum(F.l1_loss(a, r) for a, r in pairs)
        l1 = (weight * (fake - target).abs()).mean()
        temporal = F.l1_loss(fake[b:] - fake[:b], target[b:] - target[:b])
        o = self.opts
        loss_g = o.adv * adv + o.fm * fm + o.l1 * l1 + o.temporal * temporal
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"d": float(loss_d), "l1": float(l1) * 127.5, "adv": float(adv)}

    @torch.no_grad()
    def generate(self, idx: np.ndarray) -> np.ndarray:
        self.g.eval()
        t = self.t
        ref = t.reference[None].expand(len(idx), -1, -1, -1)
        got = t.target[torch.from_numpy(self.nearest[idx])]
        (out,) = self.g(ref, got, t.context[idx], t.sketch[idx], t.code[idx])
        self.g.train()
        return out.numpy()


def evaluate(trainer: Trainer, test_idx: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """Held-out L1 of the generator's outputs ``gen`` and of both baselines."""
    t = trainer.t
    rows: dict[str, list[float]] = {
        "generator": [],
        "copy_reference": [],
        "nearest_motion_frame": [],
    }
    target = t.target.numpy()
    for k, i in enumerate(test_idx):
        nn = trainer.nearest[i]
        rows["generator"].append(mouth_l1(gen[k], target[i], t.region[i]))
        rows["copy_reference"].append(mouth_l1(t.reference.numpy(), target[i], t.region[i]))
        rows["nearest_motion_frame"].append(mouth_l1(target[nn], target[i], t.region[i]))
    return {k: round(float(np.mean(v)), 3) for k, v in rows.items()} | {"held_out": len(test_idx)}


def contact_sheet(trainer: Trainer, test_idx: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Rows of held-out frames: truth | generator | nearest-motion frame | reference, x3 size."""
    t = trainer.t
    rows = []
    for k in range(0, len(test_idx), max(len(test_idx) // 8, 1)):
        i = test_idx[k]
        tiles = [t.target[i].numpy(), gen[k], t.target[trainer.nearest[i]].numpy(),
                 t.reference.numpy()]  # fmt: skip
        rows.append(np.hstack([sketch.from_unit(x) for x in tiles]))
    sheet = np.vstack(rows)
    return cv2.resize(sheet, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def save_renderer_avatar(
    out_dir: Path, name: str, data: VideoFaceData, trainer: Trainer, info: dict[str, Any]
) -> None:
    assets = AvatarAssets(name, data.portrait, data.rest, {**regions(data.rest), **info}, out_dir)
    save_avatar(assets, out_dir)
    save_rgb(out_dir / "preview.png", draw_preview(assets))
    torch.save(trainer.g.checkpoint(), out_dir / "gan.pt")
    trainer.bank.save(out_dir / "gan_bank.npz")
    export_generator(trainer.g, out_dir / "gan.onnx")


def train_renderer(
    video: Path, out_dir: Path, opts: RendererTrainOptions = RendererTrainOptions(),
    name: str | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    data = load_video_faces(video, opts.portrait)
    tensors = to_tensors(data, opts)
    train_idx, test_idx = split(len(tensors.target), opts.holdout_every)
    trainer = Trainer(tensors, train_idx, opts)
    t0 = time.monotonic()
    bar = tqdm(range(opts.steps), desc="train renderer", disable=not progress)
    step = 0
    for step in bar:
        stats = trainer.step()
        if step % 20 == 0:
            bar.set_postfix(stats)
        if time.monotonic() - t0 > opts.minutes * 60:
            break
    gen = trainer.generate(test_idx)
    metrics = evaluate(trainer, test_idx, gen)
    report = {
        "video": Path(video).name, "frames": len(tensors.target), "fps": data.fps,
        "steps": step + 1, "minutes": round((time.monotonic() - t0) / 60, 1),
        "held_out_mouth_l1": metrics, "options": asdict(opts),
        "generator_params": sum(p.numel() for p in trainer.g.parameters()),
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    gan_info = {"renderers": ["warp", "gan"], "gan": {"crop": opts.size, "source": report["video"]}}
    save_renderer_avatar(out_dir, name or out_dir.name, data, trainer, gan_info)
    (out_dir / "gan_metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    save_rgb(out_dir / "gan_heldout.png", contact_sheet(trainer, test_idx, gen))
    return report
