"""The committed INT8 models (``scripts/quantize_models.py``): they load through the real
onnxruntime backend, run close to their float32 originals on real speech, and config picks them."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.io import load_audio
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.quantize import (
    GAN_RECIPE,
    MOTION_RECIPE,
    QuantRecipe,
    int8_measured_here,
    precision_path,
    quantize_onnx,
)
from avatar.compose import quant_check as qc
from avatar.compose.renderers import load_gan_backend
from avatar.config import PACKAGE_DIR, MotionConfig, RenderConfig, load_config
from avatar.errors import AvatarNotFound, BackendUnavailable, ModelError
from avatar.face.store import AvatarAssets, load_avatar
from avatar.frames import MotionFrame
from avatar.motion.runtime import load_motion_backend

MOTION = PACKAGE_DIR / "weights" / "motion.onnx"
GAN = PACKAGE_DIR / "avatars" / "carphone" / "gan.onnx"
SAMPLE = PACKAGE_DIR / "assets" / "sample.ogg"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE)  # 8 s of a real person reading


@pytest.fixture(scope="module")
def motion(speech: np.ndarray) -> list[MotionFrame]:
    return qc.stream_motion(OrtBackend(MOTION), speech)


@pytest.fixture(scope="module")
def carphone() -> AvatarAssets:
    return load_avatar("carphone")


@pytest.mark.parametrize("fp32", [MOTION, GAN], ids=["motion", "gan"])
def test_int8_file_has_the_float32_signature_and_metadata(fp32: Path) -> None:
    ref, int8 = OrtBackend(fp32), OrtBackend(precision_path(fp32, "int8"))
    assert (int8.input_names, int8.output_names) == (ref.input_names, ref.output_names)
    assert int8.meta == {**ref.meta, "precision": "int8"}
    assert precision_path(fp32, "int8").stat().st_size < 0.45 * fp32.stat().st_size


def test_int8_motion_streams_the_float32_jaw(speech: np.ndarray, motion: list[MotionFrame]) -> None:
    int8 = qc.stream_motion(OrtBackend(precision_path(MOTION, "int8")), speech)
    agree = qc.jaw_agreement([qc.jaw_track(motion)], [qc.jaw_track(int8)])
    assert agree.frames == len(motion) > 150
    # measured 0.99997 / 0.004 / 1.0 (scripts/quantize_models.py); per-tensor weights: 0.012
    assert agree.r > 0.9995 and agree.max_abs < 0.02 and agree.closed_agree > 0.99


def _render_check(
    carphone: AvatarAssets, gan: Path, frames: list[MotionFrame]
) -> qc.RenderAgreement:
    return qc.render_agreement(carphone, OrtBackend(GAN), OrtBackend(gan), frames, 256)


def test_int8_generator_renders_the_float32_mouth(
    carphone: AvatarAssets, motion: list[MotionFrame]
) -> None:
    agree = _render_check(carphone, precision_path(GAN, "int8"), motion[::8])
    # measured at 512 px: 52 dB, 0.34 / 255 in the mouth box
    assert agree.psnr_mouth > 44 and agree.mean_abs_mouth < 1.0


def test_wrong_calibration_scales_fail_the_render_check(
    carphone: AvatarAssets, motion: list[MotionFrame], tmp_path: Path
) -> None:
    """The threshold above catches a quantization with wrong scales: calibrated on inputs at a
    tenth of their real range, the generator clips its inputs."""
    pytest.importorskip("onnx")  # quantizing needs the train extra
    feeds = qc.generator_feeds(carphone, OrtBackend(GAN), motion[::16], 256, every=1)
    wrong = [{k: v * 0.1 for k, v in f.items()} for f in feeds]
    recipe = QuantRecipe(method="static", op_types=GAN_RECIPE.op_types, preprocess=False)
    broken = quantize_onnx(GAN, tmp_path / "gan.int8.onnx", recipe, wrong)
    agree = _render_check(carphone, broken, motion[::8])
    assert not (agree.psnr_mouth > 44 and agree.mean_abs_mouth < 1.0)


def test_motion_recipe_rebuilds_the_committed_file(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    out = quantize_onnx(MOTION, tmp_path / "motion.int8.onnx", MOTION_RECIPE)
    assert out.read_bytes() == precision_path(MOTION, "int8").read_bytes()


def test_config_selects_the_int8_files(carphone: AvatarAssets) -> None:
    cfg = load_config(overrides=["motion.precision=int8", "render.precision=int8"])
    for live in (True, False):
        assert load_motion_backend(cfg.motion.for_input(live)).meta["precision"] == "int8"
    assert load_gan_backend(carphone, cfg.render).meta["precision"] == "int8"
    default = load_config()
    assert default.motion.precision == "fp32" and default.render.precision == "auto"
    assert "precision" not in load_motion_backend(default.motion).meta


def test_missing_int8_file_says_how_to_write_it(tmp_path: Path) -> None:
    shutil.copy(MOTION, tmp_path / "motion.onnx")
    cfg = MotionConfig(weights=str(tmp_path / "motion.onnx"), precision="int8")
    with pytest.raises(ModelError, match="quantize_models"):
        load_motion_backend(cfg)
    folder = tmp_path / "avatar"
    shutil.copytree(GAN.parent, folder, ignore=shutil.ignore_patterns("*.int8.onnx"))
    with pytest.raises(AvatarNotFound, match=r"quantize_models\.py --avatar"):
        load_gan_backend(load_avatar(str(folder)), RenderConfig(precision="int8"))
    with pytest.raises(AvatarNotFound, match="train renderer"):  # no GAN at all: that first
        load_gan_backend(load_avatar("default"), RenderConfig(precision="int8"))


def test_int8_has_no_torch_backend() -> None:
    with pytest.raises(BackendUnavailable):
        load_motion_backend(MotionConfig(precision="int8", backend="torch"))


def test_auto_precision_is_int8_on_onnxruntime_cpu_only(
    carphone: AvatarAssets, tmp_path: Path
) -> None:
    auto = RenderConfig(precision="auto")
    expected = "int8" if int8_measured_here() else None  # auto on ORT CPU: where measured
    assert load_gan_backend(carphone, auto).meta.get("precision") == expected
    torch_cfg = RenderConfig(precision="auto", backend="torch")
    if importlib.util.find_spec("torch") is not None:  # torch runs the float32 checkpoint
        assert "precision" not in load_gan_backend(carphone, torch_cfg).meta
    folder = tmp_path / "avatar"  # an avatar without the int8 file: float32, no error
    shutil.copytree(GAN.parent, folder, ignore=shutil.ignore_patterns("*.int8.onnx"))
    assert "precision" not in load_gan_backend(load_avatar(str(folder)), auto).meta
