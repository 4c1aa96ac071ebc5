"""The retrieval bank of a GAN avatar: training mouth crops and their motion codes.

At render time the crop whose code is nearest to the frame's is handed to the generator as a
starting point (:mod:`avatar.gan.generator`); training does the same, never retrieving a frame
for itself. Stored next to the generator as ``gan_bank.npz`` (uint8 crops, float32 codes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.errors import AvatarNotFound


class MouthBank:
    def __init__(self, codes: np.ndarray, crops: np.ndarray) -> None:
        self.codes = np.ascontiguousarray(codes, np.float32)  # (N, n_code)
        self.crops = np.ascontiguousarray(crops, np.float32)  # (N, 3, S, S) in [-1, 1]

    def nearest(self, code: np.ndarray, exclude: int | None = None) -> int:
        dist = ((self.codes - code) ** 2).sum(1)
        if exclude is not None:
            dist[exclude] = np.inf
        return int(np.argmin(dist))

    def save(self, path: Path) -> None:
        crops = np.clip((self.crops + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        np.savez_compressed(path, codes=self.codes, crops=crops)

    @classmethod
    def load(cls, path: Path) -> MouthBank:
        try:
            with np.load(path) as z:
                return cls(z["codes"], z["crops"].astype(np.float32) / 127.5 - 1.0)
        except (OSError, KeyError, ValueError) as e:
            raise AvatarNotFound(f"{path}: unreadable GAN retrieval bank ({e})") from None
