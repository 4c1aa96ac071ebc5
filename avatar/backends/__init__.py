"""Inference backends behind one protocol: onnxruntime (CPU/CUDA), torch (CPU/CUDA fp16),
TensorRT; :func:`choose_backend` picks one from configuration.

``protocol`` <- ``onnxruntime``, ``torch`` <- ``tensorrt`` <- ``select``: no module imports one
above it.
"""

from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import BACKENDS, InferenceBackend
from avatar.backends.select import backend_loaders, choose_backend
from avatar.backends.torch import TorchBackend, TorchCudaBackend

__all__ = [
    "BACKENDS",
    "InferenceBackend",
    "OrtBackend",
    "TorchBackend",
    "TorchCudaBackend",
    "backend_loaders",
    "choose_backend",
]
