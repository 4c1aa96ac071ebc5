"""Load user images with one clear error for every way a file can be unusable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar.errors import ImageInputError

MAX_PIXELS = 40_000_000  # a 40 MP photo is plenty for a 512x512 avatar


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to (H, W, 3) uint8 RGB, honouring EXIF rotation."""
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageInputError(
                    f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is "
                    f"{max_pixels / 1e6:.0f} MP, downscale it first"
                )
            img.load()  # decodes now: a truncated file fails here, not later
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        raise ImageInputError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise ImageInputError(f"{path}: image is too large to decode safely") from None
    except OSError as e:
        raise ImageInputError(f"{path}: cannot decode image ({e}); is the file complete?") from None
    arr = np.array(rgb, np.uint8)  # a writable copy
    if min(arr.shape[:2]) < 32:
        raise ImageInputError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, too small")
    return arr


def save_rgb(path: str | Path, rgb: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(path)
