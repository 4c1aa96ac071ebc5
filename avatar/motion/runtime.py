"""Load the audio-to-motion model into an inference backend chosen from config."""

from __future__ import annotations

from pathlib import Path

from avatar.backend import InferenceBackend, OrtBackend, TorchBackend
from avatar.config import PACKAGE_DIR, MotionConfig
from avatar.errors import BackendUnavailable, ModelError
from avatar.motion.channels import OUTPUT_NAMES, STATE_NAMES

BUILTIN_DIR = PACKAGE_DIR / "weights"


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
    """onnxruntime for ``auto``/``onnxruntime``; torch when asked or when ORT is missing."""
    if cfg.backend in ("auto", "onnxruntime"):
        try:
            return OrtBackend(resolve_weights(cfg.weights, ".onnx"), cfg.threads)
        except BackendUnavailable:
            if cfg.backend == "onnxruntime":
                raise
    return load_torch_backend(resolve_weights(cfg.weights, ".pt"), cfg.threads)
