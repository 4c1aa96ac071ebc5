"""``avatar train renderer VIDEO -o avatars/NAME/``: learn one person's mouth from a video.

"Warp, then refine": for every frame the warp renderer draws the avatar's portrait at the frame's
fitted blendshapes; the generator learns to turn that mouth crop into the real frame's. Its input
in training is the real crop outside the painted region (light, position) with the warp render
inside it; at render time the whole input is the warp render, since that is the frame.

Losses need no downloaded weights: L1 (weighted x5 inside the painted region) and an L1 on
frame-to-frame changes alone for the first ``warmup`` share of the budget (cheap steps), then
with hinge adversarial losses from a per-frame and a temporal PatchGAN and discriminator feature
matching. The evaluated and exported weights are an exponential moving average. With
``distill_from``, an L1 to a trained generator's outputs is added (:mod:`avatar.gan.distill`): how
a narrower ``width`` learns from the shipped one.

Every ``holdout_every``-th frame is held out; the report compares the generator on them with the
warp render alone, the training frame with the nearest motion code, and copying the reference
crop; a jaw sweep read back from the rendered pixels checks that the trained renderer follows
the motion (:mod:`avatar.gan.follow`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from avatar.face import mesh, sketch
from avatar.face.image import save_rgb
from avatar.face.prepare import draw_preview, regions
from avatar.face.store import AvatarAssets, save_avatar
from avatar.gan.data import (
    MouthPairs,
    VideoFaceData,
    load_video_faces,
    mouth_pairs,
    render_inputs,
)
from avatar.gan.discriminator import PatchDiscriminator
from avatar.gan.distill import TeacherLabels, load_teacher, teacher_labels
from avatar.gan.export import export_generator
from avatar.gan.follow import jaw_sweep, torch_renderer
from avatar.gan.generator import GeneratorDims, MouthGenerator
from avatar.render.warp import WarpRenderer

STALE_FILES = ("gan_bank.npz",)  # written by earlier versions, read by none


@dataclass(frozen=True)
class RendererTrainOptions:
    size: int = 64  # mouth crop side fed to the generator
    portrait: int = 256  # avatar portrait side
    steps: int = 2400
    minutes: float = 22.0  # stop early when this runs out
    batch: int = 8  # pairs of consecutive frames
    width: int = 24  # generator channels at full resolution
    lr: float = 5e-4
    ema: float = 0.995  # decay of the averaged generator weights that are exported
    l1: float = 40.0
    mouth_weight: float = 5.0
    fm: float = 2.0
    adv: float = 0.5
    temporal: float = 10.0
    warmup: float = 0.5  # share of the budget (time or steps) on reconstruction losses only
    holdout_every: int = 5
    seed: int = 0
    threads: int = 2
    distill_from: str = ""  # a trained generator (gan.pt) this one, often narrower, also matches
    distill: float = 40.0  # weight of the L1 to the teacher's outputs
    distill_speech_s: float = 4.0  # first seconds of sample.ogg whose motion the teacher labels


@dataclass(slots=True)
class Tensors:
    target: torch.Tensor  # (N, 3, S, S) the real frames
    inputs: torch.Tensor  # (N, 3, S, S) real outside the painted region, warp render inside
    warped: torch.Tensor  # (N, 3, S, S) the warp render alone (what rendering feeds)
    sketch: torch.Tensor  # (N, 3, S, S)
    code: torch.Tensor  # (N, 17)
    reference: torch.Tensor  # (3, S, S)
    weight: torch.Tensor  # (N, 1, S, S) L1 weight, high in the painted region
    region: np.ndarray  # (N, S, S) bool: the painted region, where the metric is taken


def to_tensors(pairs: MouthPairs, opts: RendererTrainOptions) -> Tensors:
    region = pairs.sketch[:, -1] > 0
    weight = np.where(region[:, None], opts.mouth_weight, 1.0).astype(np.float32)
    triples = zip(pairs.target, pairs.warped, pairs.sketch, strict=True)
    inputs = np.stack([sketch.training_input(real, warp, sk) for real, warp, sk in triples])
    t = torch.from_numpy
    return Tensors(t(pairs.target), t(inputs), t(pairs.warped), t(pairs.sketch), t(pairs.code),
                   t(pairs.reference), t(weight), region)  # fmt: skip


def split(n: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    test = idx % every == every // 2
    return idx[~test], idx[test]


def mouth_l1(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute difference inside the painted region, 0..255; a, b (3, S, S) in [-1, 1].

    The generator never sees these pixels of the frame (its input has the warp render there)."""
    return float(np.abs(a - b)[:, region].mean() * 127.5)


def nearest_frames(codes: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """For every frame, the *other* training frame with the nearest motion code (a baseline)."""
    dist = ((codes[:, None] - codes[None, train_idx]) ** 2).sum(-1)  # (N, n_train)
    dist[train_idx, np.arange(len(train_idx))] = np.inf
    return train_idx[dist.argmin(1)]


class Trainer:
    def __init__(
        self, tensors: Tensors, train_idx: np.ndarray, opts: RendererTrainOptions,
        labels: TeacherLabels | None = None,
    ) -> None:  # fmt: skip
        self.t, self.opts, self.labels = tensors, opts, labels
        self.train_idx = train_idx
        self.pairs = np.array([i for i in train_idx[1:] if i - 1 in set(train_idx.tolist())])
        self.g = MouthGenerator(
            GeneratorDims(size=opts.size, code=tensors.code.shape[1], width=opts.width)
        )
        self.nearest = nearest_frames(tensors.code.numpy(), train_idx)
        self.d = PatchDiscriminator(6)
        self.dt = PatchDiscriminator(12)
        betas = (0.5, 0.99)
        self.opt_g = torch.optim.Adam(self.g.parameters(), opts.lr, betas=betas)
        self.opt_d = torch.optim.Adam(
            [*self.d.parameters(), *self.dt.parameters()], opts.lr, betas=betas
        )
        # the averaged weights are the ones evaluated and exported (steadier than the last step's)
        self.g_ema = copy.deepcopy(self.g).requires_grad_(False)
        self.updates = 0
        self.rng = np.random.default_rng(opts.seed)

    def _batch(self) -> tuple[torch.Tensor, ...]:
        i = torch.from_numpy(self.rng.choice(self.pairs, self.opts.batch))
        both = torch.cat([i - 1, i])  # previous frames, then the frames
        t = self.t
        return both, t.target[both], t.inputs[both], t.sketch[both], t.code[both], t.weight[both]

    def _distill_loss(self, fake: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
        """L1 to the teacher on this batch's inputs and on as many extra inputs it labelled."""
        lab = self.labels
        assert lab is not None
        on_batch = (self.t.weight[both] * (fake - lab.on_train[both]).abs()).mean()
        j = torch.from_numpy(self.rng.choice(len(lab.out), self.opts.batch))
        (extra,) = self.g(lab.inputs[j], lab.sketch[j], lab.code[j])
        return on_batch + (lab.weight[j] * (extra - lab.out[j]).abs()).mean()

    def step(self, adversarial: bool = True) -> dict[str, float]:
        """One update; without ``adversarial``, the generator's reconstruction losses only (the
        warm-up: cheaper steps that first learn to follow the warp and the surroundings)."""
        both, target, inputs, sk, code, weight = self._batch()
        (fake,) = self.g(inputs, sk, code)
        b, o = self.opts.batch, self.opts
        l1 = (weight * (fake - target).abs()).mean()
        temporal = F.l1_loss(fake[b:] - fake[:b], target[b:] - target[:b])
        loss_g = o.l1 * l1 + o.temporal * temporal
        stats = {"l1": l1.item() * 127.5}
        if self.labels is not None:
            kd = self._distill_loss(fake, both)
            loss_g = loss_g + o.distill * kd
            stats["kd"] = kd.item() * 127.5
        if adversarial:
            adv, fm, loss_d = self._adversarial(target, fake, sk)
            loss_g = loss_g + o.adv * adv + o.fm * fm
            stats |= {"d": loss_d, "adv": adv.item()}
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._update_ema()
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        self.updates += 1
        decay = min(self.opts.ema, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(
            self.g_ema.state_dict().values(), self.g.state_dict().values(), strict=True
        ):
            avg.lerp_(p, 1 - decay)

    def _adversarial(
        self, target: torch.Tensor, fake: torch.Tensor, sk: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Update both discriminators (hinge); the generator's adversarial and feature-matching
        losses, and the discriminators' loss."""
        b = self.opts.batch
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
        g_fake, feats_fake = self.d(torch.cat([fake, sk], 1))
        gt_fake, feats_fake_t = self.dt(fake_t)
        with torch.no_grad():
            _, feats_real = self.d(torch.cat([target, sk], 1))
            _, feats_real_t = self.dt(real_t)
        adv = -g_fake.mean() - gt_fake.mean()
        pairs = zip(feats_fake + feats_fake_t, feats_real + feats_real_t, strict=True)
        fm = sum((F.l1_loss(a, r) for a, r in pairs), torch.zeros(()))
        return adv, fm, float(loss_d.detach())  # type: ignore[union-attr]

    @torch.no_grad()
    def generate(self, idx: np.ndarray, warp_only: bool = False) -> np.ndarray:
        """Outputs for frames ``idx``: from the training input (the real surroundings), or with
        ``warp_only`` from the warp render alone, as the renderer feeds it."""
        t = self.t
        inputs = (t.warped if warp_only else t.inputs)[idx]
        (out,) = self.g_ema.eval()(inputs, t.sketch[idx], t.code[idx])
        return out.numpy()


def evaluate(trainer: Trainer, test_idx: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """Held-out L1 of the generator's outputs ``gen`` and of the baselines."""
    t = trainer.t
    target, warped = t.target.numpy(), t.warped.numpy()
    candidates = {
        "generator": lambda k, i: gen[k],
        "warp_alone": lambda k, i: warped[i],
        "nearest_motion_frame": lambda k, i: target[trainer.nearest[i]],
        "copy_reference": lambda k, i: t.reference.numpy(),
    }
    out: dict[str, Any] = {}
    for name, pick in candidates.items():
        errors = [mouth_l1(pick(k, i), target[i], t.region[i]) for k, i in enumerate(test_idx)]
        out[name] = round(float(np.mean(errors)), 3)
    return out | {"held_out": len(test_idx)}


def held_out_metrics(trainer: Trainer, test_idx: np.ndarray, gen: np.ndarray) -> dict[str, Any]:
    """:func:`evaluate`, plus the generator fed what the renderer feeds it (the warp render
    everywhere, no real surroundings): how much of its lead comes from matching the frame."""
    metrics = evaluate(trainer, test_idx, gen)
    warp_fed = evaluate(trainer, test_idx, trainer.generate(test_idx, warp_only=True))
    return metrics | {"generator_fed_warp_only": warp_fed["generator"]}


def contact_sheet(trainer: Trainer, test_idx: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Rows of held-out frames: truth | generator | warp alone | nearest-motion frame, x3 size."""
    t = trainer.t
    rows = []
    for k in range(0, len(test_idx), max(len(test_idx) // 8, 1)):
        i = test_idx[k]
        tiles = [t.target[i].numpy(), gen[k], t.warped[i].numpy(),
                 t.target[trainer.nearest[i]].numpy()]  # fmt: skip
        rows.append(np.hstack([sketch.from_unit(x) for x in tiles]))
    sheet = np.vstack(rows)
    return cv2.resize(sheet, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def video_assets(data: VideoFaceData, name: str, info: dict[str, Any]) -> AvatarAssets:
    """The avatar a video makes: the reference frame as portrait. The warp renderer that draws the
    training inputs is built from this same object, so training sees what rendering will."""
    sizes = {"source_interocular_px": round(data.source_interocular, 1),
             "interocular_px": round(mesh.interocular(data.rest), 2)}  # fmt: skip
    return AvatarAssets(name, data.portrait, data.rest, {**regions(data.rest), **sizes, **info})


def save_renderer_avatar(out_dir: Path, assets: AvatarAssets, trainer: Trainer) -> None:
    save_avatar(assets, out_dir)
    save_rgb(out_dir / "preview.png", draw_preview(assets))
    torch.save(trainer.g_ema.checkpoint(), out_dir / "gan.pt")
    export_generator(trainer.g_ema, out_dir / "gan.onnx")
    for name in STALE_FILES:
        (out_dir / name).unlink(missing_ok=True)


def _fit(trainer: Trainer, opts: RendererTrainOptions, progress: bool) -> tuple[int, float]:
    """Train until ``opts.steps`` or ``opts.minutes``, the first ``opts.warmup`` of the budget
    without discriminators; (steps done, minutes)."""
    t0 = time.monotonic()
    bar = tqdm(range(opts.steps), desc="train renderer", disable=not progress)
    step = 0
    for step in bar:
        elapsed = max((time.monotonic() - t0) / (opts.minutes * 60), step / opts.steps)
        stats = trainer.step(adversarial=elapsed >= opts.warmup)
        if step % 20 == 0:
            bar.set_postfix(stats)
        if time.monotonic() - t0 > opts.minutes * 60:
            break
    return step + 1, round((time.monotonic() - t0) / 60, 1)


# seconds -> blendshapes (N, 16) of that much real speech (compose.offline.speech_blendshapes)
SpeechMotion = Callable[[float], np.ndarray]


def distill_labels(
    tensors: Tensors, train_idx: np.ndarray, warp: WarpRenderer, opts: RendererTrainOptions,
    speech_motion: SpeechMotion,
) -> TeacherLabels:  # fmt: skip
    """The teacher's outputs (:mod:`avatar.gan.distill`) on the training inputs, and on render-time
    inputs: the training frames' warp renders and warp renders at the motion of real speech."""
    teacher = load_teacher(Path(opts.distill_from), opts.size, tensors.code.shape[1])
    t = tensors
    speech = render_inputs(warp, speech_motion(opts.distill_speech_s), opts.size)
    own = (t.warped, t.sketch, t.code)
    warped, sk, code = (torch.cat([a[train_idx], torch.from_numpy(b)])
                        for a, b in zip(own, speech, strict=True))  # fmt: skip
    torch.set_num_threads(opts.threads)  # the motion model's engine may have changed it
    return teacher_labels(teacher, (t.inputs, t.sketch, t.code), (warped, sk, code),
                          opts.mouth_weight)  # fmt: skip


def train_renderer(
    video: Path, out_dir: Path, opts: RendererTrainOptions = RendererTrainOptions(),
    name: str | None = None, progress: bool = True, speech_motion: SpeechMotion | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train the avatar's GAN renderer from ``video`` into ``out_dir``; with
    ``opts.distill_from``, ``speech_motion`` gives the motion of real speech the teacher labels."""
    if opts.distill_from and speech_motion is None:
        raise ValueError("distillation needs speech_motion (compose.offline.speech_blendshapes)")
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    data = load_video_faces(video, opts.portrait)
    gan_info = {"renderers": ["warp", "gan"], "gan": {"crop": opts.size, "source": video.name}}
    assets = video_assets(data, name or out_dir.name, gan_info)
    tensors = to_tensors(mouth_pairs(data, WarpRenderer(assets, opts.portrait), opts.size), opts)
    train_idx, test_idx = split(len(tensors.target), opts.holdout_every)
    labels = None
    if opts.distill_from:
        assert speech_motion is not None
        warp = WarpRenderer(assets, opts.portrait)
        labels = distill_labels(tensors, train_idx, warp, opts, speech_motion)
    trainer = Trainer(tensors, train_idx, opts, labels)
    steps, minutes = _fit(trainer, opts, progress)
    gen = trainer.generate(test_idx)
    report = {
        "video": video.name, "frames": len(tensors.target), "fps": data.fps,
        "steps": steps, "minutes": minutes,
        "held_out_mouth_l1": held_out_metrics(trainer, test_idx, gen),
        "jaw_sweep": jaw_sweep(torch_renderer(assets, trainer.g_ema, opts.portrait)),
        "options": asdict(opts),
        "generator_params": sum(p.numel() for p in trainer.g.parameters()),
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    save_renderer_avatar(out_dir, assets, trainer)
    (out_dir / "gan_metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    save_rgb(out_dir / "gan_heldout.png", contact_sheet(trainer, test_idx, gen))
    return report
