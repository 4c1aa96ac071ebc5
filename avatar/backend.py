"""One inference-backend protocol: ``run(inputs) -> outputs`` with fixed tensor names.

A backend is chosen once from config (``auto`` -> onnxruntime, then torch); model wrappers only
see :class:`InferenceBackend` and never branch on which one they got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from avatar.errors import BackendUnavailable, ModelError

META_KEY = "avatar.meta"


@runtime_checkable
class InferenceBackend(Protocol):
    """Runs one network. Inputs and outputs are float32 numpy arrays keyed by name."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    meta: dict[str, Any]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtBackend:
    """onnxruntime session (CPU by default; CUDA if requested and available)."""

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
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        raw = self._session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ModelError(f"{path} carries no '{META_KEY}' metadata; re-export it")
        self.meta = json.loads(raw)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._session.run(None, {n: inputs[n] for n in self.input_names})
        return dict(zip(self.output_names, outs, strict=True))


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
        import torch

        self._torch = torch
        torch.set_num_threads(threads)
        self._module = module.eval()
        self.input_names = input_names
        self.output_names = output_names
        self.meta = meta

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
            outs = self._module(*args)
        return {n: o.numpy() for n, o in zip(self.output_names, outs, strict=True)}
