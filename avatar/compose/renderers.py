"""Build the configured renderer for an avatar."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.backends.quantize import int8_measured_here, precision_path
from avatar.backends.select import backend_loaders, choose_backend
from avatar.backends.torch import TorchBackend
from avatar.config import RenderConfig
from avatar.errors import AvatarNotFound, BackendUnavailable
from avatar.face.sketch import GENERATOR_KIND, INPUT_NAMES, OUTPUT_NAMES
from avatar.face.store import AvatarAssets, load_avatar
from avatar.render.base import Renderer
from avatar.render.warp import WarpRenderer


def gan_stem(cfg: RenderConfig) -> str:
    """The generator's file name without suffix: ``gan``, or ``gan_VARIANT``."""
    return f"gan_{cfg.gan_variant}" if cfg.gan_variant else "gan"


def load_gan_backend(assets: AvatarAssets, cfg: RenderConfig) -> InferenceBackend:
    """The avatar's generator (``gan``, or ``gan_VARIANT``) in the configured backend and
    precision: ``int8`` is its ``.int8.onnx`` sibling (onnxruntime only; a torch checkpoint is
    float32); ``auto`` takes that sibling where the generator runs on onnxruntime's CPU provider
    of a CPU like the one it was measured on (x86 with VNNI) and the avatar has it, float32
    anywhere else (a GPU, other CPUs)."""
    stem = gan_stem(cfg)
    onnx, pt = assets.file(f"{stem}.onnx"), assets.file(f"{stem}.pt")
    if onnx is None and pt is None:
        which = f"no {stem}.onnx (render.gan_variant)" if cfg.gan_variant else "no GAN renderer"
        raise AvatarNotFound(
            f"avatar {assets.name!r} has {which}; train one with "
            "`avatar train renderer VIDEO -o FOLDER` or use --renderer warp"
        )
    int8 = assets.file(precision_path(Path(f"{stem}.onnx"), "int8").name)
    if cfg.precision == "int8":
        onnx, pt = int8, None
        if onnx is None:
            raise AvatarNotFound(
                f"avatar {assets.name!r} has no int8 {stem} generator; write it with "
                f"`python scripts/quantize_models.py --avatar {assets.folder or assets.name}` "
                "or set render.precision=fp32"
            )

    def torch_factory() -> TorchBackend:
        assert pt is not None
        try:
            import torch

            from avatar.gan.generator import MouthGenerator
        except ImportError:
            raise BackendUnavailable(
                "torch is not installed (pip install 'avatar[train]')"
            ) from None
        ckpt = torch.load(pt, map_location="cpu", weights_only=False)
        model = MouthGenerator.from_checkpoint(ckpt)
        meta = {"kind": GENERATOR_KIND, "dims": ckpt["dims"]}
        return TorchBackend(model, INPUT_NAMES, OUTPUT_NAMES, meta, cfg.threads)

    crop = int(assets.info.get("gan", {}).get("crop", 64))
    image = ((1, 3, crop, crop), (1, 3, crop, crop), (32, 3, crop, crop))
    shapes = {  # TensorRT profile: one frame, up to 32 sessions batched
        "warped": image,
        "sketch": image,
        "code": ((1, 17), (1, 17), (32, 17)),
    }
    loaders = backend_loaders(
        onnx, torch_factory=torch_factory if pt else None, threads=cfg.threads,
        trt_input_shapes=shapes,
    )  # fmt: skip
    if cfg.precision == "auto" and int8 is not None and int8_measured_here():
        loaders["onnxruntime"] = partial(OrtBackend, int8, cfg.threads)
    return choose_backend(cfg.backend, loaders)


def load_renderer(cfg: RenderConfig) -> Renderer:
    assets = load_avatar(cfg.avatar)
    if cfg.renderer == "gan":
        from avatar.render.gan import GanRenderer

        return GanRenderer(assets, load_gan_backend(assets, cfg), cfg.size)
    return WarpRenderer(assets, cfg.size)
