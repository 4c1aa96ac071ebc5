"""One inference-backend protocol: ``run(inputs) -> outputs`` with fixed tensor names.

A backend is chosen once (:func:`avatar.backends.select.choose_backend`; ``auto`` tries
onnxruntime CUDA, onnxruntime CPU, then torch CPU: :data:`AUTO_ORDER`); model wrappers only see
:class:`InferenceBackend` and never branch on which one they got.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

META_KEY = "avatar.meta"  # ONNX metadata entry holding a model's JSON description

BackendName = Literal["tensorrt", "onnxruntime-cuda", "onnxruntime", "torch-cuda", "torch"]
BackendChoice = Literal[
    "auto", "tensorrt", "onnxruntime-cuda", "onnxruntime", "torch-cuda", "torch"
]
BACKENDS: tuple[str, ...] = get_args(BackendName)  # every backend name
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)
# What ``auto`` tries, in order: only backends whose parity tests have passed on the kind of
# machine they run on. TensorRT and torch CUDA never have (no TensorRT here, no GPU lent to that
# work: docs/renderers.md): they load only when named, until their GPU parity tests pass.
AUTO_ORDER: tuple[BackendName, ...] = ("onnxruntime-cuda", "onnxruntime", "torch")

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
