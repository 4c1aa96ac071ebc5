"""Build the configured renderer for an avatar."""

from __future__ import annotations

from avatar.backends.protocol import InferenceBackend
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
    stem = gan_stem(cfg)
    onnx = assets.file(f"{stem}.onnx")
    pt = assets.file(f"{stem}.pt")
    if onnx is None and pt is None:
        which = f"no {stem}.onnx (render.gan_variant)" if cfg.gan_variant else "no GAN renderer"
        raise AvatarNotFound(
            f"avatar {assets.name!r} has {which}; train one with "
            "`avatar train renderer VIDEO -o FOLDER` or use --renderer warp"
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
    return choose_backend(cfg.backend, loaders)


def load_renderer(cfg: RenderConfig) -> Renderer:
    assets = load_avatar(cfg.avatar)
    if cfg.renderer == "gan":
        from avatar.render.gan import GanRenderer

        return GanRenderer(assets, load_gan_backend(assets, cfg), cfg.size)
    return WarpRenderer(assets, cfg.size)
