"""The renderer protocol: one motion frame in, one RGB image out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from avatar.frames import MotionFrame


@runtime_checkable
class Renderer(Protocol):
    """Draws an avatar for a motion frame. ``render`` is pure CPU/GPU work (run it in an executor).

    ``size`` is the side of the square RGB output, (size, size, 3) uint8.
    """

    name: str
    size: int

    def render(self, motion: MotionFrame) -> np.ndarray: ...


def head_pose_matrix(pose: np.ndarray, size: int, pivot: tuple[float, float]) -> np.ndarray | None:
    """2x3 affine approximating a small head rotation/translation in the image plane.

    ``pose`` = (yaw, pitch, roll) in radians, then (tx, ty, tz) as fractions of the frame. Yaw and
    pitch of a few degrees look like shifts of the face; roll turns about ``pivot`` (the neck).
    Returns None when the pose is the identity (nothing to do).
    """
    yaw, pitch, roll, tx, ty, tz = (float(v) for v in pose[:6])
    if max(abs(yaw), abs(pitch), abs(roll), abs(tx), abs(ty), abs(tz)) < 1e-5:
        return None
    c, s = np.cos(roll), np.sin(roll)
    scale = 1.0 + tz
    m = np.array([[c * scale, -s * scale, 0.0], [s * scale, c * scale, 0.0]], np.float64)
    px, py = pivot
    m[:, 2] = [px - m[0, 0] * px - m[0, 1] * py, py - m[1, 0] * px - m[1, 1] * py]
    m[0, 2] += (tx + 0.35 * yaw) * size
    m[1, 2] += (ty + 0.35 * pitch) * size
    return m
