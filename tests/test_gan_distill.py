"""The distilled GAN generator: chosen by ``render.gan_variant``, loaded through the real
backends, drawing what the teacher draws; the distillation loss in the trainer."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.compose.renderers import load_gan_backend, load_renderer
from avatar.config import RenderConfig, load_config
from avatar.errors import AvatarNotFound
from avatar.face.store import load_avatar
from avatar.render.gan import GanRenderer
from tests.conftest import motion_frame


def _mouth_psnr(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    diff = a[y0:y1, x0:x1].astype(np.float32) - b[y0:y1, x0:x1]
    return float(10 * np.log10(255**2 / max(float(np.mean(diff**2)), 1e-10)))


@pytest.mark.parametrize("jaw", [0.0, 0.6])
def test_small_generator_is_chosen_by_config_and_draws_what_the_teacher_draws(jaw: float) -> None:
    overrides = ["render.avatar=carphone", "render.renderer=gan", "render.size=256",
                 "render.backend=onnxruntime"]  # fmt: skip
    teacher = load_renderer(load_config(None, overrides).render)
    small = load_renderer(load_config(None, [*overrides, "render.gan_variant=small"]).render)
    assert isinstance(teacher, GanRenderer) and isinstance(small, GanRenderer)
    assert teacher.backend.meta["dims"]["width"] > small.backend.meta["dims"]["width"]
    motion = motion_frame(jawOpen=jaw)
    a, b = teacher.render(motion), small.render(motion)
    assert _mouth_psnr(a, b, teacher.paste_box) > 35  # measured 38-51 dB at this size
    assert _mouth_psnr(a, teacher.warp.render(motion), teacher.paste_box) < _mouth_psnr(
        a, b, teacher.paste_box
    )  # closer to the teacher than the warp render it refines


def test_small_generator_torch_checkpoint_matches_its_onnx() -> None:
    pytest.importorskip("torch")
    assets = load_avatar("carphone")
    ort = load_gan_backend(assets, RenderConfig(backend="onnxruntime", gan_variant="small"))
    pt = load_gan_backend(assets, RenderConfig(backend="torch", gan_variant="small"))
    assert ort.meta["dims"] == pt.meta["dims"]
    rng = np.random.default_rng(0)
    feed = {n: rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32) for n in ("warped", "sketch")}
    feed["code"] = rng.uniform(0, 1, (1, 17)).astype(np.float32)
    assert np.abs(ort.run(feed)["mouth"] - pt.run(feed)["mouth"]).max() < 1e-3


def test_a_missing_variant_names_the_file() -> None:
    with pytest.raises(AvatarNotFound, match=r"gan_nosuch\.onnx"):
        load_gan_backend(load_avatar("carphone"), RenderConfig(gan_variant="nosuch"))


def test_distillation_adds_the_teacher_loss_and_trains() -> None:
    torch = pytest.importorskip("torch")
    from avatar.gan.distill import teacher_labels
    from avatar.gan.generator import GeneratorDims, MouthGenerator
    from avatar.gan.train import RendererTrainOptions, Tensors, Trainer, split

    torch.manual_seed(0)
    n, s = 10, 32
    img = lambda: torch.rand(n, 3, s, s) * 2 - 1  # noqa: E731
    sk = torch.zeros(n, 3, s, s)
    sk[:, -1, 8:24, 8:24] = 1.0
    region = sk[:, -1].numpy() > 0
    t = Tensors(img(), img(), img(), sk, torch.rand(n, 17), img()[0],
                torch.where(sk[:, -1:] > 0, 5.0, 1.0), region)  # fmt: skip
    teacher = MouthGenerator(GeneratorDims(size=s, width=16)).eval()
    labels = teacher_labels(teacher, (t.inputs, t.sketch, t.code),
                            (t.warped, t.sketch, t.code), 5.0)  # fmt: skip
    assert labels.out.shape == labels.inputs.shape == (n, 3, s, s)
    opts = RendererTrainOptions(size=s, width=8, batch=2, holdout_every=5)
    trainer = Trainer(t, split(n, 5)[0], opts, labels)
    first = trainer.step(adversarial=False)
    for _ in range(5):
        last = trainer.step(adversarial=True)
    assert "kd" in first and "kd" in last and np.isfinite(last["kd"])
