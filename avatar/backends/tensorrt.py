"""TensorRT engines: build (cached per model, precision, GPU and TensorRT version) and run.

Status, said plainly: this path has never run. There is no TensorRT on the development machines and
none on the lent GPU image either, so :func:`build_tensorrt_engine` and :class:`TensorRTBackend`
are written against the TensorRT 10 Python API documentation and have not been executed. What *is*
tested here: :func:`engine_cache_key` (pure), and that every entry point raises
:class:`BackendUnavailable` when ``tensorrt`` cannot be imported. ``tests/test_backends.py`` has a
``tensorrt``-marked parity test (fp16 engine vs. onnxruntime on the committed motion model) that
runs wherever TensorRT and a GPU exist; run it before trusting this module. Until it has passed,
``auto`` never picks TensorRT (:data:`~avatar.backends.protocol.AUTO_ORDER`): it loads only when a
configuration names it.

``tensorrt`` and ``torch`` are imported inside functions only, so importing this module is free.
Device buffers are torch CUDA tensors (torch is present wherever a GPU is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar.backends.onnxruntime import read_onnx_meta
from avatar.backends.protocol import Shape, ShapeRange
from avatar.backends.torch import import_torch_cuda
from avatar.errors import BackendUnavailable, ModelError

log = logging.getLogger(__name__)


def engine_cache_key(
    onnx_path: Path,
    *,
    fp16: bool,
    int8: bool,
    gpu_name: str,
    compute_capability: str,
    trt_version: str,
    input_shapes: Mapping[str, ShapeRange] | None = None,
) -> str:
    """sha256 (hex) over the ONNX bytes and everything that makes a built engine differ.

    An engine only runs on the GPU model and TensorRT version it was built with, and its
    optimization profile (``input_shapes``) is baked in, so all of them are part of the key.
    """
    h = hashlib.sha256(Path(onnx_path).read_bytes())
    fields = {
        "fp16": fp16,
        "int8": int8,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "trt_version": trt_version,
        "input_shapes": _shapes_json(input_shapes),
    }
    h.update(json.dumps(fields, sort_keys=True).encode())
    return h.hexdigest()


def _shapes_json(shapes: Mapping[str, ShapeRange] | None) -> dict[str, list[list[int]]] | None:
    if shapes is None:
        return None
    return {n: [list(s) for s in rng] for n, rng in sorted(shapes.items())}


def default_engine_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/avatar/tensorrt`` (``~/.cache/avatar/tensorrt`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avatar" / "tensorrt"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendUnavailable` saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver), "
            "or choose backend 'onnxruntime-cuda' / 'torch-cuda'"
        ) from None
    return trt


def gpu_identity() -> tuple[str, str]:
    """(name, compute capability like ``"9.0"``) of CUDA device 0, from torch or cupy."""
    try:
        torch = import_torch_cuda()
    except BackendUnavailable as e:
        return _cupy_gpu_identity(str(e))
    major, minor = torch.cuda.get_device_capability(0)
    return str(torch.cuda.get_device_name(0)), f"{major}.{minor}"


def _cupy_gpu_identity(torch_reason: str) -> tuple[str, str]:
    try:
        import cupy
    except ImportError:
        raise BackendUnavailable(f"cannot identify the GPU: {torch_reason}; no cupy") from None
    props = cupy.cuda.runtime.getDeviceProperties(0)
    cc = str(cupy.cuda.Device(0).compute_capability)  # "90" for 9.0
    name = props["name"]
    return (name.decode() if isinstance(name, bytes) else str(name)), f"{cc[:-1]}.{cc[-1]}"


def build_tensorrt_engine(
    onnx_path: Path,
    cache_dir: Path,
    *,
    fp16: bool = True,
    int8_calibration: Iterable[dict[str, np.ndarray]] | None = None,
    workspace_mb: int = 2048,
    input_shapes: Mapping[str, ShapeRange] | None = None,
) -> Path:
    """Build (or reuse) a serialized TensorRT engine for ``onnx_path``; returns its path.

    The engine is ``cache_dir/{key}.engine`` with the model's ``avatar.meta`` beside it in
    ``{key}.json``; see :func:`engine_cache_key`. ``input_shapes`` gives (min, opt, max) for each
    input with dynamic dimensions (one optimization profile). ``int8_calibration`` turns on INT8
    with entropy calibration over those batches (float32 arrays by input name); the calibration
    table is cached as ``{key}.calib`` and reused, so new calibration data needs a fresh cache.
    The timing cache persists across builds in ``cache_dir``.
    """
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.exists():
        raise ModelError(f"ONNX model not found: {onnx_path}")
    gpu_name, cc = gpu_identity()
    int8 = int8_calibration is not None
    key = engine_cache_key(
        onnx_path,
        fp16=fp16,
        int8=int8,
        gpu_name=gpu_name,
        compute_capability=cc,
        trt_version=trt.__version__,
        input_shapes=input_shapes,
    )
    engine_path = cache_dir / f"{key}.engine"
    sidecar = engine_path.with_suffix(".json")
    if engine_path.exists() and sidecar.exists():
        log.info("reusing TensorRT engine %s", engine_path)
        return engine_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = read_onnx_meta(onnx_path)
    log.info("building TensorRT engine for %s on %s (sm %s)", onnx_path, gpu_name, cc)
    timing = cache_dir / f"timing-sm{cc}-trt{trt.__version__}.cache"
    calib = None
    if int8_calibration is not None:
        calib = _Calibration(int8_calibration, cache_dir / f"{key}.calib")
    plan = _build_plan(trt, onnx_path, fp16, workspace_mb, input_shapes, timing, calib)
    _write_atomic(engine_path, plan)
    _write_atomic(sidecar, json.dumps(meta).encode())
    return engine_path


@dataclass(frozen=True, slots=True)
class _Calibration:
    """INT8 calibration inputs: the batches and the file that caches the resulting table."""

    batches: Iterable[dict[str, np.ndarray]]
    table: Path


def _build_plan(
    trt: Any,
    onnx_path: Path,
    fp16: bool,
    workspace_mb: int,
    input_shapes: Mapping[str, ShapeRange] | None,
    timing: Path,
    calib: _Calibration | None,
) -> bytes:
    """Parse, configure and build; the serialized engine bytes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "no parser message"
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = _add_profile(builder, network, config, input_shapes or {})
    calibrator = None  # kept alive until the build returns
    if calib is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_entropy_calibrator(trt, calib.batches, calib.table)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    _load_timing_cache(config, timing)
    plan = builder.build_serialized_network(network, config)
    del calibrator
    if plan is None:
        raise ModelError(f"TensorRT could not build an engine for {onnx_path} (see its log)")
    _write_atomic(timing, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _add_profile(
    builder: Any, network: Any, config: Any, shapes: Mapping[str, ShapeRange]
) -> Any | None:
    """One optimization profile from ``shapes``; every dynamic input must be in it."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    dynamic = [n for i, n in enumerate(names) if -1 in tuple(network.get_input(i).shape)]
    missing = [n for n in dynamic if n not in shapes]
    if missing:
        raise ModelError(f"inputs {missing} have dynamic dimensions: give input_shapes for them")
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise ModelError(f"input_shapes names {unknown} are not inputs of the model {names}")
    if not shapes:
        return None
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
    return profile


def _load_timing_cache(config: Any, path: Path) -> None:
    """Start the build from the timing cache on disk (one per GPU model and TRT version)."""
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT; starting afresh", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file, so a crash never leaves a truncated cache entry."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def make_entropy_calibrator(trt: Any, batches: Iterable[dict[str, np.ndarray]], table: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` that copies each batch to CUDA (torch) buffers.

    The class is defined here because its base exists only once ``tensorrt`` is imported.
    """
    torch = import_torch_cuda()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)
            self._device: dict[str, Any] = {}  # current batch; TRT reads it after we return

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks carry the batch in the input shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._device = {
                n: torch.from_numpy(np.ascontiguousarray(batch[n], np.float32)).cuda()
                for n in names
            }
            torch.cuda.synchronize()  # TRT reads the buffers on its own stream
            return [int(self._device[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return table.read_bytes() if table.exists() else None

        def write_calibration_cache(self, cache: Any) -> None:
            _write_atomic(table, bytes(cache))

    return EntropyCalibrator()


class TensorRTBackend:
    """A deserialized TensorRT engine behind :class:`avatar.backends.protocol.InferenceBackend`.

    Inputs are copied to CUDA buffers (torch tensors) on a private stream; output buffers are
    allocated once per input-shape signature and reused; outputs come back as float32 numpy.
    ``meta`` is read from the ``.json`` sidecar that :func:`build_tensorrt_engine` writes.
    """

    name = "tensorrt"

    def __init__(self, engine_path: Path) -> None:
        trt = import_tensorrt()
        torch = import_torch_cuda()
        engine_path = Path(engine_path)
        sidecar = engine_path.with_suffix(".json")
        if not engine_path.exists() or not sidecar.exists():
            raise ModelError(f"TensorRT engine or its sidecar missing: {engine_path}, {sidecar}")
        self.meta: dict[str, Any] = json.loads(sidecar.read_text())
        self._trt, self._torch = trt, torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise ModelError(f"cannot load TensorRT engine {engine_path}; rebuild it")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: _torch_dtype(torch, self._engine.get_tensor_dtype(n)) for n in names}
        self._stream = torch.cuda.Stream()
        self._outputs: dict[tuple[Shape, ...], dict[str, Any]] = {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.cuda.stream(self._stream):
            device = {n: self._to_device(n, inputs[n]) for n in self.input_names}
            for name, tensor in device.items():
                self._bind_input(name, tensor)
            key = tuple(tuple(t.shape) for t in device.values())
            outputs = self._output_buffers(key)
            for name, tensor in outputs.items():
                self._context.set_tensor_address(name, tensor.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise ModelError("TensorRT execution failed (see its log)")
            # .cpu() on this stream waits for the engine and the copy
            return {n: t.float().cpu().numpy() for n, t in outputs.items()}

    def _bind_input(self, name: str, tensor: Any) -> None:
        shape = tuple(tensor.shape)
        if not self._context.set_input_shape(name, shape):
            raise ModelError(
                f"input {name} of shape {shape} is outside the engine's optimization profile"
            )
        self._context.set_tensor_address(name, tensor.data_ptr())

    def _to_device(self, name: str, array: np.ndarray) -> Any:
        host = self._torch.from_numpy(np.ascontiguousarray(array))
        return host.to(device="cuda", dtype=self._dtypes[name]).contiguous()

    def _output_buffers(self, key: tuple[Shape, ...]) -> dict[str, Any]:
        """Output tensors for this input-shape signature (input shapes must be set first)."""
        outputs = self._outputs.get(key)
        if outputs is None:
            if len(self._outputs) > 16:  # many shapes (offline chunks): do not hoard memory
                self._outputs.clear()
            outputs = {
                n: self._torch.empty(
                    tuple(self._context.get_tensor_shape(n)), dtype=self._dtypes[n], device="cuda"
                )
                for n in self.output_names
            }
            self._outputs[key] = outputs
        return outputs


def _torch_dtype(torch: Any, trt_dtype: Any) -> Any:
    """The torch dtype of a TensorRT ``DataType`` (by enum name, so no table of TRT objects)."""
    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
    }
    dtype = table.get(trt_dtype.name)
    if dtype is None:
        raise ModelError(f"engine tensor type {trt_dtype.name} is not supported here")
    return dtype
