"""torch modules as an :class:`InferenceBackend`: CPU float32, and CUDA fp16 with CUDA graphs.

``torch`` is imported inside functions only, so importing this module is free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar.errors import BackendUnavailable

log = logging.getLogger(__name__)


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
