"""One inference-backend protocol: ``run(inputs) -> outputs`` with fixed tensor names.

A backend is chosen once (:func:`avatar.backends.select.choose_backend`; ``auto`` tries TensorRT,
onnxruntime CUDA, onnxruntime CPU, torch CUDA fp16, torch CPU in that order); model wrappers only
see :class:`InferenceBackend` and never branch on which one they got.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

META_KEY = "avatar.meta"  # ONNX metadata entry holding a model's JSON description

BackendName = Literal["tensorrt", "onnxruntime-cuda", "onnxruntime", "torch-cuda", "torch"]
BackendChoice = Literal[
    "auto", "tensorrt", "onnxruntime-cuda", "onnxruntime", "torch-cuda", "torch"
]
# every backend name, in the order ``auto`` tries them
BACKENDS: tuple[str, ...] = get_args(BackendName)
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)

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
