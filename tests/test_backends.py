"""Backend choice (fake loaders that build real-protocol backends), the real loaders that can run
here (onnxruntime CPU, torch CPU, the fp16 torch path on CPU), TensorRT's cache key and its
absence, and that ``auto`` never tries TensorRT or torch CUDA (their GPU parity tests have not
run); GPU and TensorRT parity tests run only where those exist."""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.onnxruntime import OrtBackend, ort_cuda_available, read_onnx_meta
from avatar.backends.protocol import AUTO_ORDER, BACKENDS, InferenceBackend
from avatar.backends.select import Loader, backend_loaders, choose_backend
from avatar.backends.tensorrt import TensorRTBackend, build_tensorrt_engine, engine_cache_key
from avatar.backends.torch import TorchBackend, TorchCudaBackend
from avatar.errors import BackendUnavailable, ConfigError, ModelError
from tests.conftest import WEIGHTS

ONNX = WEIGHTS / "motion.onnx"
CHECKPOINT = WEIGHTS / "motion.pt"
MODEL_OUTPUTS = ("blendshapes", "visemes")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    if not _has("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


class NamedBackend:
    """A backend that only says which loader made it (implements InferenceBackend)."""

    input_names: tuple[str, ...] = ("x",)
    output_names: tuple[str, ...] = ("y",)

    def __init__(self, name: str) -> None:
        self.name = name
        self.meta: dict[str, Any] = {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}


def fake_loaders(available: set[str], calls: list[str]) -> dict[str, Loader]:
    """A loader per backend name; those not in ``available`` raise BackendUnavailable."""

    def loader(name: str) -> Loader:
        def load() -> NamedBackend:
            calls.append(name)
            if name not in available:
                raise BackendUnavailable(f"{name} missing in this test")
            return NamedBackend(name)

        return load

    return {n: loader(n) for n in BACKENDS}


# --- choice ------------------------------------------------------------------------------------


def test_auto_skips_unavailable_in_order(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    caplog.set_level(logging.INFO, logger="avatar.backends.select")
    backend = choose_backend("auto", fake_loaders({"onnxruntime", "torch"}, calls))
    assert isinstance(backend, InferenceBackend)
    assert backend.name == "onnxruntime"
    assert calls == ["onnxruntime-cuda", "onnxruntime"]  # torch never loaded
    text = caplog.text
    assert "onnxruntime-cuda skipped: onnxruntime-cuda missing" in text
    assert "onnxruntime chosen" in text


@pytest.mark.parametrize("first", AUTO_ORDER)
def test_auto_returns_first_that_loads(first: str) -> None:
    calls: list[str] = []
    later = set(AUTO_ORDER[AUTO_ORDER.index(first) :]) | {"tensorrt", "torch-cuda"}
    backend = choose_backend("auto", fake_loaders(later, calls))
    assert backend.name == first
    assert calls == list(AUTO_ORDER[: AUTO_ORDER.index(first) + 1])


def test_auto_never_tries_tensorrt_even_where_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT's code has never run (its GPU parity test has not passed anywhere): ``auto`` must
    not pick it, even on a machine where ``import tensorrt`` works."""
    touched: list[str] = []

    class FakeTensorRT(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            touched.append(name)
            raise AttributeError(name)

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("tensorrt"))
    calls: list[str] = []
    assert choose_backend("auto", fake_loaders(set(BACKENDS), calls)).name == "onnxruntime-cuda"
    assert "tensorrt" not in calls and "torch-cuda" not in calls

    def profile() -> dict[str, Any]:
        touched.append("profile")  # what the TensorRT loader computes once tensorrt imports
        return {}

    backend = choose_backend("auto", backend_loaders(ONNX, trt_input_shapes=profile))
    assert backend.name.startswith("onnxruntime")
    assert touched == []


def test_auto_with_nothing_available_lists_every_reason() -> None:
    with pytest.raises(BackendUnavailable) as err:
        choose_backend("auto", fake_loaders(set(), []))
    for name in AUTO_ORDER:
        assert f"{name}: {name} missing" in str(err.value)


def test_auto_does_not_hide_a_broken_model() -> None:
    def broken() -> InferenceBackend:
        raise ModelError("corrupt model")

    loaders = fake_loaders(set(BACKENDS), [])
    loaders["onnxruntime-cuda"] = broken
    with pytest.raises(ModelError, match="corrupt model"):
        choose_backend("auto", loaders)


def test_missing_loader_counts_as_unavailable() -> None:
    loaders = fake_loaders({"torch"}, [])
    del loaders["tensorrt"], loaders["onnxruntime"]
    assert choose_backend("auto", loaders).name == "torch"
    with pytest.raises(BackendUnavailable, match="no loader"):
        choose_backend("onnxruntime", loaders)
    with pytest.raises(BackendUnavailable, match="no loader"):
        choose_backend("tensorrt", loaders)


@pytest.mark.parametrize("preference", BACKENDS)
def test_explicit_preference_loads_only_itself(preference: str) -> None:
    calls: list[str] = []
    assert choose_backend(preference, fake_loaders(set(BACKENDS), calls)).name == preference
    assert calls == [preference]


@pytest.mark.parametrize("preference", BACKENDS)
def test_explicit_preference_that_cannot_load_raises(preference: str) -> None:
    calls: list[str] = []
    others = set(BACKENDS) - {preference}
    with pytest.raises(BackendUnavailable) as err:
        choose_backend(preference, fake_loaders(others, calls))
    assert calls == [preference]  # no silent fallback
    assert repr(preference) in str(err.value)
    assert f"{preference} missing" in str(err.value)


def test_unknown_preference_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="onnxruntime-cuda"):
        choose_backend("tensorflow", fake_loaders(set(BACKENDS), []))


# --- real loaders that run here -------------------------------------------------------------


def _torch_factory() -> TorchBackend:
    pytest.importorskip("torch")
    from avatar.motion.runtime import load_torch_backend

    return load_torch_backend(CHECKPOINT)


def test_ort_cuda_available_matches_providers() -> None:
    import onnxruntime as ort

    assert ort_cuda_available() == ("CUDAExecutionProvider" in ort.get_available_providers())


@pytest.mark.skipif(ort_cuda_available(), reason="onnxruntime-gpu is installed")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_ort_cuda_requested_without_provider_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="CUDA provider"):
        OrtBackend(ONNX, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        choose_backend("onnxruntime-cuda", backend_loaders(ONNX))


@pytest.mark.skipif(ort_cuda_available(), reason="onnxruntime-gpu is installed")
def test_auto_with_real_loaders_picks_onnxruntime_cpu() -> None:
    backend = choose_backend("auto", backend_loaders(ONNX, torch_factory=_torch_factory))
    assert isinstance(backend, OrtBackend)
    assert backend.name == "onnxruntime"
    assert backend.meta["kind"] == "motion"


def test_auto_without_onnx_falls_back_to_torch() -> None:
    pytest.importorskip("torch")
    backend = choose_backend("auto", backend_loaders(None, torch_factory=_torch_factory))
    assert backend.name == "torch"  # torch CUDA only when named, even where a GPU exists
    assert backend.input_names[0] == "mel"


def test_real_tensorrt_loader_unavailable_without_tensorrt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    loaders = backend_loaders(ONNX, engine_cache_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        choose_backend("tensorrt", loaders)
    assert choose_backend("auto", loaders).name.startswith("onnxruntime")
    assert not list(tmp_path.iterdir())  # nothing built, nothing hashed into the cache


@pytest.mark.skipif(_cuda(), reason="a CUDA device is present")
def test_torch_cuda_unavailable_without_gpu() -> None:
    pytest.importorskip("torch")
    with pytest.raises(BackendUnavailable):
        choose_backend("torch-cuda", backend_loaders(ONNX, torch_factory=_torch_factory))
    with pytest.raises(BackendUnavailable, match="no torch model"):
        choose_backend("torch", backend_loaders(ONNX))


# --- TensorRT pieces that run here ----------------------------------------------------------

KEY_FIELDS: dict[str, Any] = {
    "fp16": True,
    "int8": False,
    "gpu_name": "NVIDIA H200",
    "compute_capability": "9.0",
    "trt_version": "10.7.0",
    "input_shapes": None,
}


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("fp16", False),
        ("int8", True),
        ("gpu_name", "NVIDIA L4"),
        ("compute_capability", "8.9"),
        ("trt_version", "10.8.0"),
        ("input_shapes", {"mel": ((1, 2, 80), (1, 4, 80), (1, 64, 80))}),
    ],
)
def test_engine_cache_key_changes_with_each_field(field: str, other: Any) -> None:
    base = engine_cache_key(ONNX, **KEY_FIELDS)
    assert engine_cache_key(ONNX, **KEY_FIELDS) == base  # deterministic
    assert engine_cache_key(ONNX, **{**KEY_FIELDS, field: other}) != base


def test_engine_cache_key_changes_with_model_bytes(tmp_path: Path) -> None:
    copy_path = tmp_path / "copy.onnx"
    shutil.copyfile(ONNX, copy_path)
    assert engine_cache_key(copy_path, **KEY_FIELDS) == engine_cache_key(ONNX, **KEY_FIELDS)
    copy_path.write_bytes(ONNX.read_bytes() + b"\0")
    assert engine_cache_key(copy_path, **KEY_FIELDS) != engine_cache_key(ONNX, **KEY_FIELDS)


def test_read_onnx_meta_with_and_without_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = OrtBackend(ONNX).meta
    if _has("onnx"):
        assert read_onnx_meta(ONNX) == expected
    monkeypatch.setitem(sys.modules, "onnx", None)  # the onnxruntime fallback
    assert read_onnx_meta(ONNX) == expected


def test_build_engine_and_backend_unavailable_without_tensorrt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        build_tensorrt_engine(ONNX, tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTBackend(tmp_path / "missing.engine")


# --- parity: fp16 torch (CPU here, CUDA where present) and TensorRT against onnxruntime -----


def _stream(backend: InferenceBackend, mels: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Run ``backend`` step by step, feeding each step's state outputs back in."""
    shapes = backend.meta["state_shapes"]
    state = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    steps = []
    for mel in mels:
        out = {k: v.copy() for k, v in backend.run({"mel": mel, **state}).items()}
        state = {n: out[f"{n}_out"] for n in shapes}
        steps.append(out)
    return steps


def _mels(steps: int, frames: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((1, frames, 80)) * 2 - 5).astype(np.float32) for _ in range(steps)]


def _assert_parity(got: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> None:
    for g, r in zip(got, ref, strict=True):
        assert set(g) == set(r)
        for name in r:
            assert g[name].dtype == np.float32
            assert g[name].shape == r[name].shape
            tol = 1e-2 if name in MODEL_OUTPUTS else 2e-2  # states: mel-scale values in fp16
            np.testing.assert_allclose(g[name], r[name], rtol=tol, atol=tol, err_msg=name)


def test_fp16_torch_path_matches_onnxruntime_on_cpu() -> None:
    reference = _torch_factory()
    half = TorchCudaBackend(
        copy.deepcopy(reference.module),
        reference.input_names,
        reference.output_names,
        reference.meta,
        device="cpu",
    )
    mels = _mels(12)
    _assert_parity(_stream(half, mels), _stream(OrtBackend(ONNX), mels))


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_torch_cuda_matches_onnxruntime(cuda_graphs: bool) -> None:
    cuda = TorchCudaBackend.from_torch(_torch_factory(), cuda_graphs=cuda_graphs)
    assert cuda.name == "torch-cuda"
    ort = OrtBackend(ONNX)
    for frames in (4, 8, 4):  # a new shape captures a new graph; the old one is replayed
        mels = _mels(10, frames, seed=frames)
        _assert_parity(_stream(cuda, mels), _stream(ort, mels))


@pytest.mark.gpu
@pytest.mark.skipif(not ort_cuda_available(), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_ort_cuda_matches_onnxruntime_cpu() -> None:
    cuda = choose_backend("onnxruntime-cuda", backend_loaders(ONNX))
    assert cuda.name == "onnxruntime-cuda"
    cpu = OrtBackend(ONNX)
    for frames in (4, 16):
        mels = _mels(10, frames, seed=frames)
        _assert_parity(_stream(cuda, mels), _stream(cpu, mels))


@pytest.mark.tensorrt
@pytest.mark.skipif(not _has("tensorrt"), reason="needs TensorRT")
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_tensorrt_fp16_engine_matches_onnxruntime(tmp_path: Path) -> None:
    ort = OrtBackend(ONNX)
    shapes: dict[str, Any] = {
        n: (tuple(s), tuple(s), tuple(s)) for n, s in ort.meta["state_shapes"].items()
    }
    shapes["mel"] = ((1, 2, 80), (1, 4, 80), (1, 64, 80))
    engine = build_tensorrt_engine(ONNX, tmp_path, fp16=True, input_shapes=shapes)
    assert engine.with_suffix(".json").exists()
    assert build_tensorrt_engine(ONNX, tmp_path, fp16=True, input_shapes=shapes) == engine  # cached
    trt_backend = TensorRTBackend(engine)
    assert trt_backend.name == "tensorrt"
    assert trt_backend.meta == ort.meta
    assert set(trt_backend.input_names) == set(ort.input_names)
    for frames in (4, 16):
        mels = _mels(10, frames, seed=frames)
        _assert_parity(_stream(trt_backend, mels), _stream(ort, mels))
