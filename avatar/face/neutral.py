"""A closed, neutral mouth from a photo that shows its teeth.

A portrait photographed mid-smile with its teeth showing cannot be closed by a smooth warp: the
band of teeth between the lips is squeezed but never leaves, and shows as pale streaks in the
lower lip. :func:`close_lips` closes the lips by a piecewise-affine warp instead: each lip keeps
its own pixels and moves to meet the other at their common midline, the skin around the mouth
follows over a ring of fixed points, and the teeth between the lips map to a line and are gone.
The renderer then treats the portrait as a closed mouth (drawn teeth, the rig's rest closure
nothing to do), and its resting smile still relaxes while it talks (the rig's ``relax`` basis).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from avatar.face import mesh

RING_D = (0.55, 1.1)  # inter-ocular units: face-mesh points in this ring around the mouth hold
OUTER_SHARE = 0.6  # the outer lip contour moves this share of its inner contour's way
OPEN_GAP_D = 0.05
SEAM_TONE = 0.9
EDGE_D = 0.015
SUPERSAMPLE = 4


def shows_teeth(landmarks: np.ndarray) -> bool:
    """Whether the photo's lips are apart (at the middle of the mouth)."""
    gap = mesh.inner_lip_gap(landmarks) / mesh.interocular(landmarks)
    return bool(gap >= OPEN_GAP_D)


def closed_lip_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The landmarks with the inner lips on their midline and the outer lips following."""
    out = landmarks.copy()
    ui, li = list(mesh.LIPS_INNER_UPPER), list(mesh.LIPS_INNER_LOWER)
    uo, lo = list(mesh.LIPS_OUTER_UPPER[1:-1]), list(mesh.LIPS_OUTER_LOWER[1:-1])
    half = 0.5 * (landmarks[li, 1] - landmarks[ui, 1])
    out[ui, 1] += half
    out[li, 1] -= half
    out[uo, 1] += OUTER_SHARE * half[1:-1]
    out[lo, 1] -= OUTER_SHARE * half[1:-1]
    return out


def close_lips(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(portrait, landmarks) with the lips closed; unchanged when they already are."""
    if not shows_teeth(landmarks):
        return image, landmarks
    closed = closed_lip_landmarks(landmarks)
    idx = _control_points(landmarks)
    src = _inside_lips(landmarks)[idx, :2].astype(np.float64)
    dst = closed[idx, :2].astype(np.float64)
    x0, y0 = np.maximum(np.floor(np.minimum(src.min(0), dst.min(0))).astype(int) - 2, 0)
    x1, y1 = np.ceil(np.maximum(src.max(0), dst.max(0))).astype(int) + 3
    box = (slice(y0, y1), slice(x0, x1))
    k = SUPERSAMPLE  # drawn k times larger, then reduced: triangle edges leave no steps
    filled = _fill_opening(image, landmarks)[box]  # what shows where no lip pixel lands
    big_src = cv2.resize(filled, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    big_out = big_src.copy()
    drawn = np.zeros(big_src.shape[:2], np.float32)
    src_k, dst_k = (src - [x0, y0] + 0.5) * k - 0.5, (dst - [x0, y0] + 0.5) * k - 0.5
    upper = np.isin(idx, mesh.LIPS_INNER_UPPER[1:-1] + mesh.LIPS_OUTER_UPPER[1:-1])
    lower = np.isin(idx, mesh.LIPS_INNER_LOWER[1:-1] + mesh.LIPS_OUTER_LOWER[1:-1])
    moved = np.abs(dst - src).max(1) > 1e-3
    for tri in Delaunay(src).simplices:
        if upper[tri].any() and lower[tri].any():  # a triangle across the teeth: gone
            continue
        if moved[tri].any():  # (the ring's own triangles stay as they are)
            _warp_triangle(big_src, big_out, src_k[tri], dst_k[tri])
            cv2.fillConvexPoly(drawn, np.round(dst_k[tri]).astype(np.int32), 1.0)
    size = (x1 - x0, y1 - y0)
    new = cv2.resize(big_out, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)[..., None]
    out = image.copy()
    region = out[box].astype(np.float32)
    out[box] = np.clip(region + (new - region) * alpha + 0.5, 0, 255).astype(np.uint8)
    return out, closed


def _inside_lips(landmarks: np.ndarray) -> np.ndarray:
    """The inner lip contours moved :data:`EDGE_D` into the lips: face mesh puts them on the
    edge, and the lips' pixels, not the teeth's, must meet at the seam."""
    out = landmarks.copy()
    edge = EDGE_D * mesh.interocular(landmarks)
    out[list(mesh.LIPS_INNER_UPPER[1:-1]), 1] -= edge
    out[list(mesh.LIPS_INNER_LOWER[1:-1]), 1] += edge
    return out


def _fill_opening(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The photo with the opening between its lips painted in a dark lip tone."""
    lips = np.zeros(image.shape[:2], np.uint8)
    outer = np.vstack([landmarks[list(mesh.LIPS_OUTER_UPPER), :2],
                       landmarks[list(mesh.LIPS_OUTER_LOWER), :2][::-1]])  # fmt: skip
    cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 1)
    opening = np.zeros_like(lips)
    inner = np.vstack([landmarks[list(mesh.LIPS_INNER_UPPER), :2],
                       landmarks[list(mesh.LIPS_INNER_LOWER), :2][::-1]])  # fmt: skip
    cv2.fillPoly(opening, [np.round(inner).astype(np.int32)], 1)
    tone = np.median(image[(lips == 1) & (opening == 0)], axis=0) * SEAM_TONE
    out = image.copy()
    out[cv2.dilate(opening, np.ones((3, 3), np.uint8)) == 1] = tone.astype(np.uint8)
    return out


def _control_points(landmarks: np.ndarray) -> list[int]:
    """Lip contours, and every face-mesh point in :data:`RING_D` around the mouth (they stay)."""
    lips = set(mesh.LIPS_INNER_UPPER + mesh.LIPS_INNER_LOWER + mesh.LIPS_OUTER_UPPER
               + mesh.LIPS_OUTER_LOWER)  # fmt: skip
    centre = landmarks[list(mesh.INNER_CORNERS), :2].mean(0)
    dist = np.linalg.norm(landmarks[:468, :2] - centre, axis=1) / mesh.interocular(landmarks)
    ring = {int(i) for i in np.flatnonzero((dist >= RING_D[0]) & (dist <= RING_D[1]))}
    return sorted(lips | ring)


def _warp_triangle(src_img: np.ndarray, out: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """Draw the source triangle's pixels into the destination triangle. Edges are hard: the
    triangles tile the region, and the map is continuous across their shared edges."""
    (ax, ay), (bx, by) = dst[1] - dst[0], dst[2] - dst[0]
    area = 0.5 * abs(ax * by - ay * bx)
    if area < 0.5:  # a triangle of the teeth, collapsed onto the lips' seam
        return
    x0, y0 = np.floor(dst.min(0)).astype(int)
    x1, y1 = np.ceil(dst.max(0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, out.shape[1]), min(y1, out.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    m = cv2.getAffineTransform((dst - [x0, y0]).astype(np.float32), src.astype(np.float32))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    patch = cv2.warpAffine(src_img, m, (x1 - x0, y1 - y0), flags=flags,
                           borderMode=cv2.BORDER_REFLECT101)  # fmt: skip
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.round(dst - [x0, y0]).astype(np.int32), 1)
    region = out[y0:y1, x0:x1]
    region[mask == 1] = patch[mask == 1]
