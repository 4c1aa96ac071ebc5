"""One inference-backend protocol: ``run(inputs) -> outputs`` with fixed tensor names.

A backend is chosen once (:func:`choose_backend`; ``auto`` tries TensorRT, onnxruntime CUDA,
onnxruntime CPU, torch CUDA fp16, torch CPU in that order); model wrappers only see
:class:`InferenceBackend` and never branch on which one they got.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from avatar.errors import BackendUnavailable, ConfigError, ModelError

log = logging.getLogger(__name__)

META_KEY = "avatar.meta"
CUDA_PROVIDER = "CUDAExecutionProvider"
# every backend name, in the order ``auto`` tries them
BACKENDS: tuple[str, ...] = ("tensorrt", "onnxruntime-cuda", "onnxruntime", "torch-cuda", "torch")

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]  # (min, opt, max) of one input in a TensorRT profile


@runtime_checkable
class InferenceBackend(Protocol):
    """Runs one network. Inputs and outputs are float32 numpy arrays keyed by name."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    meta: dict[str, Any]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtBackend:
    """onnxruntime session (CPU by default; CUDA if requested and available).

    Outputs are written into preallocated buffers through IO bindings (two per input shape,
    used in turn, outputs bound once), which saves ~30% of a small streaming step. So an output
    array is valid until the second-next ``run`` with the same shapes: feeding it back as the next
    call's state is safe; keeping it longer needs a copy.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "onnxruntime is not installed: pip install onnxruntime"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from None
        self._check_providers(providers or [])
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        raw = self._session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ModelError(f"{path} carries no '{META_KEY}' metadata; re-export it")
        self.meta = json.loads(raw)
        self._ort = ort
        # per input-shape signature: two (IO binding, output buffers) pairs used in turn; the
        # outputs stay bound, so a call only rebinds its inputs
        self._bound: dict[tuple[tuple[int, ...], ...], tuple[list[Any], list[int]]] = {}

    def _check_providers(self, requested: list[str]) -> None:
        """ORT silently falls back to CPU when CUDA fails to load (no cuDNN...): say so."""
        active = self._session.get_providers()
        if CUDA_PROVIDER in requested and CUDA_PROVIDER not in active:
            raise BackendUnavailable(
                "onnxruntime could not start its CUDA provider (CUDA/cuDNN libraries missing or "
                "no GPU); see onnxruntime's log"
            )
        if active and active[0] == CUDA_PROVIDER:
            self.name = "onnxruntime-cuda"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: np.ascontiguousarray(inputs[n], np.float32) for n in self.input_names}
        key = tuple(feeds[n].shape for n in self.input_names)
        entry = self._bound.get(key)
        if entry is None:  # first call with these shapes: learn the output shapes
            outs = self._session.run(None, feeds)
            if len(self._bound) > 16:  # many shapes (offline chunks): do not hoard memory
                self._bound.clear()
            self._bound[key] = ([self._bind_outputs(outs) for _ in range(2)], [0])
            return dict(zip(self.output_names, outs, strict=True))
        pairs, turn = entry
        turn[0] ^= 1
        binding, out = pairs[turn[0]]
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        self._session.run_with_iobinding(binding)
        return out

    def _bind_outputs(self, like: list[np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        out = {n: np.empty_like(o) for n, o in zip(self.output_names, like, strict=True)}
        binding = self._session.io_binding()
        for name, buf in out.items():
            binding.bind_output(name, "cpu", 0, np.float32, buf.shape, buf.ctypes.data)
        return binding, out


class TorchBackend:
    """A ``torch.nn.Module`` whose forward takes and returns tensors in the declared order."""

    name = "torch"

    def __init__(
        self,
        module: Any,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        meta: dict[str, Any],
        threads: int = 1,
    ) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(
                "torch is not installed (pip install 'avatar[train]')"
            ) from None
        self._torch = torch
        torch.set_num_threads(threads)
        self._module = module.eval()
        self.input_names = input_names
        self.output_names = output_names
        self.meta = meta

    @property
    def module(self) -> Any:
        """The wrapped ``torch.nn.Module`` (in eval mode, on the CPU)."""
        return self._module

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
            outs = self._module(*args)
        return {n: o.numpy() for n, o in zip(self.output_names, outs, strict=True)}


def ort_cuda_available() -> bool:
    """Whether the installed onnxruntime has the CUDA execution provider (onnxruntime-gpu)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return CUDA_PROVIDER in ort.get_available_providers()


def import_torch_cuda() -> Any:
    """The ``torch`` module when it can reach a CUDA device, else :class:`BackendUnavailable`."""
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("torch is not installed (pip install 'avatar[train]')") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable("torch sees no CUDA device (CPU-only torch build or no GPU)")
    return torch


@dataclass(slots=True)
class _CapturedGraph:
    """A CUDA graph of one forward pass and the static tensors it reads and writes."""

    graph: Any
    inputs: list[Any]
    outputs: list[Any]


class TorchCudaBackend:
    """A ``torch.nn.Module`` run in fp16 on CUDA, optionally replayed from CUDA graphs.

    Weights and floating inputs are cast to half and forward runs under fp16 autocast (float32
    constants made inside forward, like an attention mask, would otherwise meet half matmuls);
    outputs come back as float32 numpy. The module is moved and converted in place (as
    ``nn.Module.to`` does), so a CPU backend it came from is spent. With ``cuda_graphs``,
    the first call with a new input-shape signature warms up on a side stream and captures one
    graph; later calls copy into its static inputs and replay it (a streaming step launches one
    graph instead of hundreds of kernels). A module that cannot be captured runs eagerly.
    ``device="cpu"`` (no graphs) exists to test the fp16 path where no GPU is.
    """

    name = "torch-cuda"

    def __init__(
        self,
        module: Any,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        meta: dict[str, Any],
        *,
        cuda_graphs: bool = True,
        device: str = "cuda",
    ) -> None:
        if device.startswith("cuda"):
            self._torch = import_torch_cuda()
        else:
            import torch

            self._torch = torch
        self._device = device
        self._graphs_on = cuda_graphs and device.startswith("cuda")
        self._module = module.to(device).half().eval()
        self.input_names = input_names
        self.output_names = output_names
        self.meta = meta
        self._graphs: dict[tuple[tuple[int, ...], ...], _CapturedGraph | None] = {}

    @classmethod
    def from_torch(cls, backend: TorchBackend, *, cuda_graphs: bool = True) -> TorchCudaBackend:
        """The same module, names and meta as a CPU :class:`TorchBackend`, moved to CUDA
        (the CPU backend is spent: its module now lives on the GPU in half precision)."""
        return cls(
            backend.module,
            backend.input_names,
            backend.output_names,
            backend.meta,
            cuda_graphs=cuda_graphs,
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(inputs[n]) for n in self.input_names]
        with self._torch.no_grad(), self._autocast():
            captured = self._graph_for(arrays) if self._graphs_on else None
            if captured is None:
                outs = _as_tuple(self._module(*self._to_device(arrays)))
            else:
                for static, array in zip(captured.inputs, arrays, strict=True):
                    static.copy_(self._torch.from_numpy(array))
                captured.graph.replay()
                outs = tuple(captured.outputs)
            return {
                n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)
            }

    def _autocast(self) -> Any:
        """fp16 autocast, so float32 constants made inside forward do not break half matmuls
        (no cast cache: CUDA graphs forbid it)."""
        device_type = self._device.split(":")[0]
        return self._torch.autocast(device_type, self._torch.float16, cache_enabled=False)

    def _to_device(self, arrays: list[np.ndarray]) -> list[Any]:
        tensors = [self._torch.from_numpy(a).to(self._device) for a in arrays]
        return [t.half() if t.is_floating_point() else t for t in tensors]

    def _graph_for(self, arrays: list[np.ndarray]) -> _CapturedGraph | None:
        key = tuple(a.shape for a in arrays)
        if key not in self._graphs:
            if len(self._graphs) > 16:  # many shapes (offline chunks): do not hoard graphs
                self._graphs.clear()
            self._graphs[key] = self._capture(arrays)
        return self._graphs[key]

    def _capture(self, arrays: list[np.ndarray]) -> _CapturedGraph | None:
        """Warm up on a side stream (as torch's docs require), then capture one forward."""
        torch = self._torch
        static = self._to_device(arrays)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._module(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = list(_as_tuple(self._module(*static)))
        except RuntimeError as e:  # a host sync or unsupported op inside forward
            log.warning("CUDA graph capture failed (%s); running this shape eagerly", e)
            return None
        return _CapturedGraph(graph, static, outputs)


def _as_tuple(outs: Any) -> tuple[Any, ...]:
    return tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)


Loader = Callable[[], InferenceBackend]
TorchFactory = Callable[[], TorchBackend]


def backend_loaders(
    onnx_path: Path | None,
    *,
    torch_factory: TorchFactory | None = None,
    threads: int = 1,
    engine_cache_dir: Path | None = None,
    trt_input_shapes: Mapping[str, ShapeRange] | None = None,
) -> dict[str, Loader]:
    """The real loader of every backend, for :func:`choose_backend`.

    ``onnx_path`` feeds TensorRT and onnxruntime; ``torch_factory`` (e.g. ``load_torch_backend``
    bound to a checkpoint) feeds both torch backends; ``trt_input_shapes`` is the TensorRT
    profile, needed when the model has dynamic dimensions. A loader whose input is missing
    raises :class:`BackendUnavailable`, so ``auto`` moves on.
    """
    return {
        "tensorrt": lambda: _load_tensorrt(onnx_path, engine_cache_dir, trt_input_shapes),
        "onnxruntime-cuda": lambda: _load_ort_cuda(onnx_path, threads),
        "onnxruntime": lambda: OrtBackend(_need_onnx(onnx_path), threads),
        "torch-cuda": lambda: _load_torch_cuda(torch_factory),
        "torch": lambda: _need_torch(torch_factory)(),
    }


def choose_backend(preference: str, loaders: Mapping[str, Loader]) -> InferenceBackend:
    """The backend ``preference`` names, or for ``auto`` the first of :data:`BACKENDS` that loads.

    Only :class:`BackendUnavailable` moves ``auto`` on; a broken model file still raises. An
    explicit preference that cannot load raises :class:`BackendUnavailable` saying why.
    """
    if preference != "auto" and preference not in BACKENDS:
        raise ConfigError(
            f"unknown backend {preference!r}; choose one of auto, {', '.join(BACKENDS)}"
        )
    reasons: list[str] = []
    for name in BACKENDS if preference == "auto" else (preference,):
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
    input_shapes: Mapping[str, ShapeRange] | None,
) -> InferenceBackend:
    from avatar import tensorrt as avatar_trt  # imports tensorrt itself only when called

    avatar_trt.import_tensorrt()  # fail fast, before hashing the model
    cache_dir = cache_dir or avatar_trt.default_engine_cache_dir()
    engine = avatar_trt.build_engine(_need_onnx(onnx_path), cache_dir, input_shapes=input_shapes)
    return avatar_trt.TensorRTBackend(engine)
