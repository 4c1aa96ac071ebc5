"""Frames larger than the renderer draws them: Lanczos resampling.

No learned super-resolution model can ship here (no model hubs; none comes inside a registry
package), so a job that asks for a video side above the avatar's portrait gets each rendered frame
resampled. scripts/bench_upscale.py measured the candidates (docs/upscale.json).
"""

from __future__ import annotations

import cv2
import numpy as np


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (h, w, 3) uint8 resized to ``size`` x ``size``."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_LANCZOS4 if size > image.shape[0] else cv2.INTER_AREA
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=interp))
