"""Load the audio-to-motion model into an inference backend chosen from config."""

from __future__ import annotations

from pathlib import Path

from avatar.backends.protocol import InferenceBackend
from avatar.backends.select import backend_loaders, choose_backend
from avatar.backends.torch import TorchBackend
from avatar.config import PACKAGE_DIR, MotionConfig
from avatar.errors import BackendUnavailable, ModelError
from avatar.motion.channels import OUTPUT_NAMES, STATE_NAMES

BUILTIN_DIR = PACKAGE_DIR / "weights"
N_MELS = 80  # the shipped model's feature size (its metadata has the authoritative value)


def resolve_weights(spec: str, suffix: str) -> Path:
    """``builtin`` -> the committed model; otherwise a path (its sibling with ``suffix``)."""
    path = BUILTIN_DIR / f"motion{suffix}" if spec == "builtin" else Path(spec)
    if path.suffix != suffix:
        path = path.with_suffix(suffix)
    if not path.exists():
        raise ModelError(f"motion model not found: {path}")
    return path


def load_torch_backend(path: Path, threads: int = 1) -> TorchBackend:
    """A torch backend from a ``motion.pt`` checkpoint (needs the ``train`` extra)."""
    try:
        import torch

        from avatar.motion.model import MotionTransformer
    except ImportError:
        raise BackendUnavailable("torch is not installed (pip install 'avatar[train]')") from None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = MotionTransformer.from_checkpoint(ckpt)
    meta = ckpt["meta"]
    return TorchBackend(
        model,
        ("mel", *STATE_NAMES),
        (*OUTPUT_NAMES, *(f"{n}_out" for n in STATE_NAMES)),
        meta,
        threads,
    )


def load_motion_backend(cfg: MotionConfig) -> InferenceBackend:
    """The first backend that loads, in the order ``auto`` prescribes (see ``choose_backend``)."""
    onnx = _existing(cfg.weights, ".onnx")
    pt = _existing(cfg.weights, ".pt")
    if onnx is None and pt is None:
        resolve_weights(cfg.weights, ".onnx")  # raises the not-found error
    loaders = backend_loaders(
        onnx,
        torch_factory=(lambda: load_torch_backend(pt, cfg.threads)) if pt else None,
        threads=cfg.threads,
        # TensorRT profile: a streaming step is 2-4 mel frames, a file block up to ~10 s
        trt_input_shapes={"mel": ((1, 2, N_MELS), (1, 4, N_MELS), (1, 1024, N_MELS))},
    )
    return choose_backend(cfg.backend, loaders)


def _existing(spec: str, suffix: str) -> Path | None:
    try:
        return resolve_weights(spec, suffix)
    except ModelError:
        return None
