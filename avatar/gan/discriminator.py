"""PatchGAN discriminators for the mouth crops: one per frame, one over consecutive frames.

``PatchDiscriminator(in_ch)`` maps (B, in_ch, S, S) to a grid of real/fake logits (B, 1, S/8, S/8)
and also returns its intermediate features for the feature-matching loss. The per-frame one sees
the crop with its sketch (is this a real mouth with this shape?); the temporal one sees two
consecutive crops and their sketches (does this change look real?).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, in_ch: int, width: int = 48) -> None:
        super().__init__()
        chans = (in_ch, width, 2 * width, 4 * width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.utils.spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1)),
                nn.LeakyReLU(0.2),
            )
            for i in range(3)
        )
        self.out = nn.utils.spectral_norm(nn.Conv2d(chans[3], 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.out(x), feats
