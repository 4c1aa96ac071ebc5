"""What the GAN renderer sees: the mouth crop box, the rig's lip sketch and the region it paints.

Shared by training and rendering (numpy and OpenCV only, no torch), so the generator is driven by
exactly the same pictures in both.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar.face import mesh
from avatar.face.rig import FaceRig

# tensor names of the generator (torch, ONNX and TensorRT share them)
INPUT_NAMES = ("warped", "sketch", "code")
OUTPUT_NAMES = ("mouth",)
GENERATOR_KIND = "gan-mouth-refine"  # in a model's metadata: which generator (inputs) it holds
CROP_EYE_UNITS = 1.5  # side of the mouth crop in inter-ocular distances
CROP_CENTER_BELOW = 0.12  # crop centre below the mouth centre, same unit (room for the jaw)
MASK_PAD = 0.25  # the painted region: the lips' box grown by this share of the crop, to the bottom


def mouth_box(rest: np.ndarray) -> tuple[float, float, float]:
    """(x0, y0, side) of the square mouth crop in portrait pixels, from rest landmarks."""
    d = mesh.interocular(rest)
    centre = rest[list(mesh.MOUTH_CORNERS + mesh.UPPER_LIP_MID + mesh.LOWER_LIP_MID), :2].mean(0)
    side = CROP_EYE_UNITS * d
    return float(centre[0] - side / 2), float(centre[1] + CROP_CENTER_BELOW * d - side / 2), side


def crop_matrix(box: tuple[float, float, float], size: int) -> np.ndarray:
    """2x3 affine from portrait pixels to crop pixels."""
    x0, y0, side = box
    k = size / side
    return np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)


def crop(image: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    return cv2.warpAffine(
        image, crop_matrix(box, size), (size, size), flags=cv2.INTER_AREA,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip


def _to_crop(landmarks: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    m = crop_matrix(box, size)
    return landmarks[:, :2] @ m[:, :2].T + m[:, 2]


def _fill(pts: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...], size: int) -> np.ndarray:
    """The polygon between two lip contours, anti-aliased, in [-1, 1]."""
    canvas = np.zeros((size, size), np.uint8)
    up, lo = pts[list(upper)], pts[list(lower)].copy()
    lo[:, 1] = np.maximum(lo[:, 1], up[:, 1])  # overlapping (sealed) lips: no opening
    poly = np.vstack([up, lo[::-1]])
    cv2.fillPoly(canvas, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 127.5 - 1.0


def _region(pts: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the lips' box grown by ``MASK_PAD``, down to the bottom (the chin)."""
    outer = pts[list(mesh.LIPS_OUTER_UPPER + mesh.LIPS_OUTER_LOWER)]
    pad = MASK_PAD * size
    x0, y0 = np.floor(outer.min(0) - pad).astype(int).clip(0, size)
    x1 = int(np.ceil(outer[:, 0].max() + pad).clip(0, size))
    region = np.zeros((size, size), bool)
    region[y0:, x0:x1] = True
    return region


def rig_sketch(
    rig: FaceRig, weights: np.ndarray, box: tuple[float, float, float], size: int
) -> np.ndarray:
    """(3, size, size) float32 in [-1, 1], from the rig at basis ``weights``: the mouth opening,
    the lips (both filled), and the region the generator paints. The region covers the mouth and
    chin both where the rig puts them and at rest, so everything the warp moved is inside it."""
    pts = _to_crop(rig.landmarks(weights), box, size)
    opening = _fill(pts, mesh.LIPS_INNER_UPPER, mesh.LIPS_INNER_LOWER, size)
    lips = _fill(pts, mesh.LIPS_OUTER_UPPER, mesh.LIPS_OUTER_LOWER, size)
    region = _region(pts, size) | _region(_to_crop(rig.rest, box, size), size)
    return np.stack([opening, lips, np.where(region, 1.0, -1.0).astype(np.float32)])


def region_of(sketch_: np.ndarray) -> np.ndarray:
    """(S, S) bool: the painted region of a sketch (its last channel)."""
    return sketch_[-1] > 0


def training_input(real: np.ndarray, warped: np.ndarray, sketch_: np.ndarray) -> np.ndarray:
    """The generator's input when training: the real frame's crop (3, S, S) outside the painted
    region (its light and position), the warp render inside it (the motion)."""
    return np.where(region_of(sketch_)[None], warped, real).astype(np.float32)


def to_unit(rgb: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, S, S) float32 in [-1, 1]."""
    return rgb.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0


def from_unit(x: np.ndarray) -> np.ndarray:
    return np.clip((x.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def paste_mask(size: int, feather: float = 0.18) -> np.ndarray:
    """(size, size) weights for pasting a crop back: 1 inside, fading to 0 at the edges."""
    t = np.linspace(0, 1, size, dtype=np.float32)
    edge = np.clip(np.minimum(t, 1 - t) / feather, 0, 1)
    edge = edge * edge * (3 - 2 * edge)
    return np.outer(edge, edge)
