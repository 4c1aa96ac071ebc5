"""The GAN renderer's generator: "warp, then refine" the mouth region of one person.

Geometry comes from the warp renderer, appearance from the person. Inputs, images in [-1, 1]:
*warped* (B, 3, S, S), the mouth crop of the frame as the warp renderer draws it (in training,
the real frame's crop outside the painted region and the warp render inside it, so light and
position can be matched to the surroundings); a *sketch* (B, 3, S, S) rasterised from the face
rig at the frame's blendshapes (the mouth opening, the lips, the region to paint); and the rig's
basis weights *code* (B, n_code). A small U-Net whose decoder levels are FiLM-modulated by the
code predicts an RGB crop and a blend mask; the output is ``warped + mask * (rgb - warped)``, so
what the warp already gets right is kept, not re-drawn. There is no retrieved training crop: a
real mouth to copy is what made an earlier version ignore the geometry it was given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from avatar.errors import ModelError
from avatar.face.sketch import GENERATOR_KIND, INPUT_NAMES, OUTPUT_NAMES

__all__ = ["GENERATOR_KIND", "INPUT_NAMES", "OUTPUT_NAMES", "GeneratorDims", "MouthGenerator"]


@dataclass(frozen=True)
class GeneratorDims:
    size: int = 64  # side of the square mouth crop
    code: int = 17  # rig basis weights
    width: int = 32  # channels at full resolution (x2, x4, x6 below)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class FiLMBlock(nn.Module):
    """Conv, then scale/shift every channel by the code: where the motion enters the image."""

    def __init__(self, ch: int, code: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)
        self.norm = nn.GroupNorm(8, ch, affine=False)
        self.film = nn.Linear(code, 2 * ch)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(h)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x + F.silu(self.norm(self.conv(x)) * (1 + gamma) + beta)


class MouthGenerator(nn.Module):
    def __init__(self, dims: GeneratorDims) -> None:
        super().__init__()
        self.dims = dims
        w = dims.width
        chans = (w, 2 * w, 4 * w, 6 * w)  # at S, S/2, S/4, S/8
        self.code_mlp = nn.Sequential(nn.Linear(dims.code, 128), nn.SiLU(), nn.Linear(128, 128))
        self.stem = _conv(6, chans[0])
        self.down = nn.ModuleList(_conv(chans[i], chans[i + 1], 2) for i in range(3))
        self.mid = nn.ModuleList(FiLMBlock(chans[3], 128) for _ in range(2))
        self.up = nn.ModuleList(
            _conv(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(3))
        )
        self.film = nn.ModuleList(FiLMBlock(chans[i], 128) for i in reversed(range(3)))
        self.head = nn.Conv2d(chans[0], 4, 3, 1, 1)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> MouthGenerator:
        model = cls(GeneratorDims(**ckpt["dims"]))
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise ModelError(
                "this GAN checkpoint was trained by an older version of the generator; "
                "retrain it with `avatar train renderer VIDEO -o FOLDER`"
            ) from None
        return model.eval()

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return {"dims": asdict(self.dims), "state_dict": self.state_dict(), **extra}

    def forward(
        self,
        warped: torch.Tensor,
        sketch: torch.Tensor,
        code: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        h = self.code_mlp(code)  # (B, 128)
        x = self.stem(torch.cat([warped, sketch], 1))  # (B, w, S, S)
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        for block in self.mid:
            x = block(x, h)  # (B, 6w, S/8, S/8)
        for up, film, skip in zip(self.up, self.film, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = film(up(torch.cat([x, skip], 1)), h)
        rgb, mask = self.head(x).split([3, 1], dim=1)
        mask = torch.sigmoid(mask)  # (B, 1, S, S)
        return (warped + mask * (torch.tanh(rgb) - warped),)
