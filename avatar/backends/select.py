"""Choosing a backend: every backend's loader; ``auto`` tries :data:`AUTO_ORDER` in turn.

TensorRT's module is imported only when TensorRT is named (it is not in ``auto``'s order)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from avatar.backends.onnxruntime import CUDA_PROVIDER, OrtBackend, ort_cuda_available
from avatar.backends.protocol import AUTO_ORDER, BACKENDS, InferenceBackend, ShapeRange
from avatar.backends.torch import TorchBackend, TorchCudaBackend, import_torch_cuda
from avatar.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

Loader = Callable[[], InferenceBackend]
TorchFactory = Callable[[], TorchBackend]
# a TensorRT profile, or what computes it (only when TensorRT is tried: it may read the model)
ShapeProfile = Mapping[str, ShapeRange] | Callable[[], Mapping[str, ShapeRange]]


def backend_loaders(
    onnx_path: Path | None,
    *,
    torch_factory: TorchFactory | None = None,
    threads: int = 1,
    engine_cache_dir: Path | None = None,
    trt_input_shapes: ShapeProfile | None = None,
) -> dict[str, Loader]:
    """The real loader of every backend, for :func:`choose_backend`.

    ``onnx_path`` feeds TensorRT and onnxruntime; ``torch_factory`` (e.g. ``load_torch_backend``
    bound to a checkpoint) feeds both torch backends; ``trt_input_shapes`` is the TensorRT
    profile, needed when the model has dynamic dimensions (or a function that returns it). A
    loader whose input is missing raises :class:`BackendUnavailable`, so ``auto`` moves on.
    """
    return {
        "tensorrt": lambda: _load_tensorrt(onnx_path, engine_cache_dir, trt_input_shapes),
        "onnxruntime-cuda": lambda: _load_ort_cuda(onnx_path, threads),
        "onnxruntime": lambda: OrtBackend(_need_onnx(onnx_path), threads),
        "torch-cuda": lambda: _load_torch_cuda(torch_factory),
        "torch": lambda: _need_torch(torch_factory)(),
    }


def choose_backend(preference: str, loaders: Mapping[str, Loader]) -> InferenceBackend:
    """The backend ``preference`` names, or for ``auto`` the first of :data:`AUTO_ORDER` that
    loads (onnxruntime CUDA, onnxruntime CPU, torch CPU; never TensorRT or torch CUDA, whose GPU
    parity tests have not run: they load only when named).

    Only :class:`BackendUnavailable` moves ``auto`` on; a broken model file still raises. An
    explicit preference that cannot load raises :class:`BackendUnavailable` saying why.
    """
    if preference != "auto" and preference not in BACKENDS:
        raise ConfigError(
            f"unknown backend {preference!r}; choose one of auto, {', '.join(BACKENDS)}"
        )
    reasons: list[str] = []
    for name in AUTO_ORDER if preference == "auto" else (preference,):
        try:
            backend = _load(name, loaders)
        except BackendUnavailable as e:
            log.info("backend %s skipped: %s", name, e)
            reasons.append(f"{name}: {e}")
            continue
        why = "first that loads in auto order" if preference == "auto" else "requested"
        log.info("backend %s chosen (%s)", name, why)
        return backend
    if preference == "auto":
        raise BackendUnavailable("no inference backend can run here: " + "; ".join(reasons))
    raise BackendUnavailable(
        f"backend {preference!r} was requested but cannot run here ({reasons[0]}); "
        "install what it needs or set the backend to 'auto'"
    )


def _load(name: str, loaders: Mapping[str, Loader]) -> InferenceBackend:
    loader = loaders.get(name)
    if loader is None:
        raise BackendUnavailable("no loader for it was given")
    return loader()


def _need_onnx(onnx_path: Path | None) -> Path:
    if onnx_path is None:
        raise BackendUnavailable("no ONNX model was given")
    return onnx_path


def _need_torch(factory: TorchFactory | None) -> TorchFactory:
    if factory is None:
        raise BackendUnavailable("no torch model was given")
    return factory


def _load_ort_cuda(onnx_path: Path | None, threads: int) -> OrtBackend:
    if not ort_cuda_available():
        raise BackendUnavailable(
            "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
        )
    return OrtBackend(_need_onnx(onnx_path), threads, [CUDA_PROVIDER, "CPUExecutionProvider"])


def _load_torch_cuda(factory: TorchFactory | None) -> TorchCudaBackend:
    import_torch_cuda()  # before the factory, so a CPU-only machine does not load weights twice
    return TorchCudaBackend.from_torch(_need_torch(factory)())


def _load_tensorrt(
    onnx_path: Path | None,
    cache_dir: Path | None,
    input_shapes: ShapeProfile | None,
) -> InferenceBackend:
    from avatar.backends import tensorrt as trt  # only when TensorRT is named

    trt.import_tensorrt()  # fail fast, before hashing the model
    cache_dir = cache_dir or trt.default_engine_cache_dir()
    if callable(input_shapes):
        input_shapes = input_shapes()
    engine = trt.build_tensorrt_engine(_need_onnx(onnx_path), cache_dir, input_shapes=input_shapes)
    return trt.TensorRTBackend(engine)
