"""Load the audio-to-motion model into an inference backend chosen from config."""

from __future__ import annotations

from pathlib import Path

from avatar.backends.onnxruntime import read_onnx_meta
from avatar.backends.protocol import InferenceBackend, ShapeRange
from avatar.backends.quantize import precision_path
from avatar.backends.select import backend_loaders, choose_backend
from avatar.backends.torch import TorchBackend
from avatar.config import PACKAGE_DIR, MotionConfig
from avatar.errors import BackendUnavailable, ModelError
from avatar.motion.channels import BATCH_AXES, OUTPUT_NAMES, STATE_NAMES

BUILTIN_DIR = PACKAGE_DIR / "weights"
MAX_BATCH = 32  # TensorRT profile: streams one call may carry (avatar.backends.batching)


def resolve_weights(spec: str, suffix: str) -> Path:
    """``builtin`` -> the committed model, ``builtin:NAME`` -> the committed ``NAME`` model;
    otherwise a path (its sibling with ``suffix``)."""
    if spec == "builtin" or spec.startswith("builtin:"):
        path = BUILTIN_DIR / f"{spec.partition(':')[2] or 'motion'}{suffix}"
    else:
        path = Path(spec)
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
    """The configured backend, or for ``auto`` the first that loads (see ``choose_backend``)."""
    if cfg.precision != "fp32":
        return _load_quantized(cfg)
    onnx = _existing(cfg.weights, ".onnx")
    pt = _existing(cfg.weights, ".pt")
    if onnx is None and pt is None:
        resolve_weights(cfg.weights, ".onnx")  # raises the not-found error
    loaders = backend_loaders(
        onnx,
        torch_factory=(lambda: load_torch_backend(pt, cfg.threads)) if pt else None,
        threads=cfg.threads,
        trt_input_shapes=(lambda: trt_profile(onnx)) if onnx else None,
    )
    return choose_backend(cfg.backend, loaders)


def _load_quantized(cfg: MotionConfig) -> InferenceBackend:
    """The ``cfg.precision`` sibling of the ONNX weights; no torch fallback (a checkpoint is
    float32)."""
    onnx = precision_path(resolve_weights(cfg.weights, ".onnx"), cfg.precision)
    if not onnx.exists():
        raise ModelError(
            f"no {cfg.precision} motion model {onnx}: write it with "
            "`python scripts/quantize_models.py`, or set motion.precision=fp32"
        )
    loaders = backend_loaders(onnx, threads=cfg.threads, trt_input_shapes=lambda: trt_profile(onnx))
    return choose_backend(cfg.backend, loaders)


def trt_profile(onnx: Path, max_batch: int = MAX_BATCH) -> dict[str, ShapeRange]:
    """TensorRT profile: a streaming step is 2-4 mel frames, a file block up to ~10 s; one
    stream, or up to ``max_batch`` batched. State shapes come from the model's metadata."""
    meta = read_onnx_meta(onnx)
    n_mels = int(meta["dims"]["n_mels"])
    shapes: dict[str, ShapeRange] = {
        "mel": ((1, 2, n_mels), (1, 4, n_mels), (max_batch, 1024, n_mels))
    }
    for name, shape in meta["state_shapes"].items():
        one = tuple(int(x) for x in shape)
        axis = BATCH_AXES.get(name, 0)
        shapes[name] = (one, one, (*one[:axis], max_batch, *one[axis + 1 :]))
    return shapes


def _existing(spec: str, suffix: str) -> Path | None:
    try:
        return resolve_weights(spec, suffix)
    except ModelError:
        return None
