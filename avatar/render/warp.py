"""Renderer 1, the CPU default: a smooth warp of the portrait driven by the face rig.

At load, every rig basis (landmark displacements, :mod:`avatar.face.rig`) is interpolated with a
thin-plate spline into a dense displacement field over the face's region (on a grid of ``step``
pixels). Per frame: the fields are mixed with the frame's basis weights (one small matrix product),
upsampled, inverted by a few fixed-point steps (forward field -> backward map) and applied with
OpenCV ``remap``; then the mouth interior (:mod:`avatar.render.mouth`: teeth, tongue, cavity) is
painted inside the displaced inner-lip contour, and the head pose is applied as a small affine.
Lips meet when the rig closes them, so P/B/M show closed lips.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from avatar.face import mesh
from avatar.face.neutral import close_lips
from avatar.face.rig import BASIS_INDEX, FaceRig
from avatar.face.store import AvatarAssets
from avatar.frames import MotionFrame
from avatar.render.base import head_pose_matrix
from avatar.render.mouth import MouthInterior

INVERSE_STEPS = 4


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-12)), 0.0)


def tps_fields(ctrl: np.ndarray, values: np.ndarray, grid: np.ndarray, reg: float) -> np.ndarray:
    """Thin-plate interpolation of ``values`` (n_ctrl, k) at ``grid`` (n_grid, 2) -> (n_grid, k)."""
    scale = float(np.abs(ctrl).max())
    c, g = ctrl / scale, grid / scale
    n = len(c)
    k = _tps_kernel(c, c) + reg * np.eye(n)
    p = np.hstack([np.ones((n, 1)), c])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    rhs = np.vstack([values, np.zeros((3, values.shape[1]))])
    coef = np.linalg.solve(a, rhs)
    out = np.empty((len(g), values.shape[1]))
    for s in range(0, len(g), 4096):  # bounded memory for the (grid x ctrl) kernel
        gs = g[s : s + 4096]
        out[s : s + 4096] = (
            _tps_kernel(gs, c) @ coef[:n] + np.hstack([np.ones((len(gs), 1)), gs]) @ coef[n:]
        )
    return out


def _remap(
    src: np.ndarray, map1: np.ndarray, map2: np.ndarray | None, interp: int, **kw: Any
) -> np.ndarray:
    """``cv2.remap``; some releases' stubs reject ``map2=None`` (a two-channel map), which
    OpenCV accepts, so it is called untyped (an ignore would be unused under other stubs)."""
    remap: Any = cv2.remap
    return np.asarray(remap(src, map1, map2, interp, **kw))


def _fixed_point(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A two-channel float map as fixed-point coordinates (1/32 px) for ``cv2.remap``: the
    conversion costs less than it saves the remap. Called untyped, as :func:`_remap` is."""
    convert: Any = cv2.convertMaps
    ints, frac = convert(xy, None, cv2.CV_16SC2)
    return ints, frac


def _sample(field: np.ndarray, at: np.ndarray) -> np.ndarray:
    return _remap(field, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def source_pixel(assets: AvatarAssets) -> float:
    """The size of one pixel of the source photo in the avatar's portrait (its sharpness): the
    portrait was scaled from the photo by ``interocular_px / source_interocular_px``."""
    source = float(assets.info.get("source_interocular_px", 0) or 0)
    return float(assets.info.get("interocular_px", 0)) / source if source > 0 else 1.0


class WarpRenderer:
    """Mesh-warp renderer for one avatar at ``size`` x ``size`` (default: the portrait's size)."""

    name = "warp"

    def __init__(self, assets: AvatarAssets, size: int | None = None, step: int = 4) -> None:
        self.size = size or assets.size
        scale = self.size / assets.size
        self._source_px = scale * source_pixel(assets)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        portrait = assets.portrait
        if scale != 1:
            portrait = cv2.resize(portrait, (self.size, self.size), interpolation=interp)
        lm = assets.landmarks.copy()
        lm[:, :2] *= scale
        portrait, lm = close_lips(portrait, lm)  # a photo showing its teeth: closed, neutral lips
        self.portrait = np.ascontiguousarray(portrait)
        self.rig = FaceRig(lm, assets.info.get("jaw_map"))
        self.d = self.rig.d
        self.step = step
        self._setup_roi()
        self._setup_fields()
        self._jaw_drop = float(self.rig.bases[BASIS_INDEX["jaw"], mesh.LOWER_LIP_MID[1], 1])
        self._setup_interior()
        oval = self.rig.rest[list(mesh.FACE_OVAL)]
        self.pivot = (float(oval[:, 0].mean()), float(self.rig.rest[mesh.CHIN, 1] + 0.5 * self.d))

    # -- load-time precomputation ---------------------------------------------------------------
    def _setup_roi(self) -> None:
        rest, d, s = self.rig.rest, self.d, self.step
        oval = rest[list(mesh.FACE_OVAL)]
        brows = rest[list(mesh.EYEBROW_LEFT + mesh.EYEBROW_RIGHT)]
        x0 = max(int(oval[:, 0].min() - 0.35 * d), 0)
        x1 = min(int(oval[:, 0].max() + 0.35 * d), self.size)
        y0 = max(int(brows[:, 1].min() - 0.6 * d), 0)
        y1 = min(int(rest[mesh.CHIN, 1] + 1.1 * d), self.size)  # room for the jaw to drop
        w, h = (x1 - x0) // s * s, (y1 - y0) // s * s  # whole grid cells
        self.roi = (x0, y0, x0 + w, y0 + h)
        self.roi_src = np.ascontiguousarray(self.portrait[y0 : y0 + h, x0 : x0 + w])
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self._base = np.dstack([xs, ys])  # (h, w, 2) identity map

    def _anchors(self) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        w, h = x1 - x0, y1 - y0
        t = np.linspace(0, 1, 13)
        border = np.concatenate(
            [
                np.c_[t * w, 0 * t],
                np.c_[t * w, 0 * t + h],
                np.c_[0 * t, t * h],
                np.c_[0 * t + w, t * h],
            ]
        )
        return border

    def _setup_fields(self) -> None:
        x0, y0, x1, y1 = self.roi
        rest = self.rig.rest[:468] - np.array([x0, y0], np.float32)  # iris points excluded
        anchors = self._anchors()
        ctrl = np.vstack([rest, anchors]).astype(np.float64)
        n_b = len(self.rig.bases)
        vals = np.zeros((len(ctrl), n_b * 2))
        vals[:468] = self.rig.bases[:, :468, :].transpose(1, 0, 2).reshape(468, n_b * 2)
        s = self.step
        gw, gh = (x1 - x0) // s, (y1 - y0) // s
        gx, gy = np.meshgrid((np.arange(gw) + 0.5) * s - 0.5, (np.arange(gh) + 0.5) * s - 0.5)
        grid = np.c_[gx.ravel(), gy.ravel()]
        fields = tps_fields(ctrl, vals, grid, reg=1e-4)  # (gh*gw, n_b*2)
        self._fields = np.ascontiguousarray(
            fields.reshape(gh, gw, n_b, 2).transpose(2, 0, 1, 3).reshape(n_b, -1), np.float32
        )
        self._grid_shape = (gh, gw)
        ix, iy = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
        self._grid_index = np.dstack([ix, iy])
        self._grid_px = np.dstack([gx + x0, gy + y0]).astype(np.float32)  # image pixels
        self._grid_taper = self.pose_taper(self._grid_px)[..., None]

    def pose_taper(self, p: np.ndarray) -> np.ndarray:
        """How much of the head pose applies at image points ``p`` (..., 2): 1 on the face,
        fading to 0 at the region's border, so the warped region meets the still frame."""
        x0, y0, x1, y1 = self.roi
        edge = np.minimum.reduce([p[..., 0] - x0, x1 - 1 - p[..., 0], p[..., 1] - y0,
                                  y1 - 1 - p[..., 1]])  # fmt: skip
        u = np.clip(edge / (0.6 * self.d), 0.0, 1.0)
        return (u * u * (3 - 2 * u)).astype(np.float32)

    def _setup_interior(self) -> None:
        """The lips' colour (for the seam of closed lips) and the mouth interior, whose teeth sit
        where the relaxed, closed mouth has its lips' middle."""
        x0, y0 = self.roi[:2]
        rest = self.rig.rest - np.array([x0, y0], np.float32)
        lips = np.zeros(self.roi_src.shape[:2], np.uint8)
        outer = np.vstack(
            [rest[list(mesh.LIPS_OUTER_UPPER)], rest[list(mesh.LIPS_OUTER_LOWER)][::-1]]
        )
        cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 1)
        self._lip_rgb = np.median(self.roi_src[lips == 1], axis=0).astype(np.float32) * 0.92
        bases = self.rig.bases
        neutral = rest + bases[BASIS_INDEX["rest_close"]] + bases[BASIS_INDEX["relax"]]
        self.mouth = MouthInterior(self.roi_src, rest, neutral, self.d, self._source_px)

    # -- per frame --------------------------------------------------------------------------------
    def backward_map(self, weights: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """(h, w, 2) source coordinates for every ROI pixel.

        The fields are forward displacements (where a source point goes); fixed-point steps on the
        coarse grid turn them into backward ones (where an output pixel comes from). The head
        pose (a 2x3 affine, tapered to nothing at the region's border) is inverted first. Only the
        result is upsampled to full resolution: one ``remap`` of the region does everything.
        """
        gh, gw = self._grid_shape
        fwd = (weights @ self._fields).reshape(gh, gw, 2)
        shift = np.zeros_like(fwd)
        if pose is not None:
            q = self._grid_px
            shift = (cv2.transform(q, cv2.invertAffineTransform(pose)) - q) * self._grid_taper
        p1 = self._grid_index + shift / self.step  # grid coordinates of the un-posed point
        at = p1  # fixed-point iterations: a few are needed where the jaw moves far
        for _ in range(INVERSE_STEPS):
            at = p1 - _sample(fwd, at) / self.step
        back = shift - _sample(fwd, at)
        h, w = self._base.shape[:2]
        return self._base + cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR)

    def render(self, motion: MotionFrame) -> np.ndarray:
        weights = self.rig.weights(motion)
        pose = head_pose_matrix(motion.head_pose, self.size, self.pivot)
        return self.warp_face(weights, pose, motion.visemes)

    def warp_face(
        self, weights: np.ndarray, pose: np.ndarray | None = None,
        visemes: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """The portrait with the rig at ``weights`` (basis weights), an optional head pose, and
        the visemes (the tongue) when the motion model gave them."""
        x0, y0, x1, y1 = self.roi
        xy, frac = _fixed_point(self.backward_map(weights, pose))
        roi = _remap(self.roi_src, xy, frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lm = self.rig.landmarks(weights)
        if pose is not None:
            moved = lm @ pose[:, :2].T + pose[:, 2]
            lm = (lm + (moved - lm) * self.pose_taper(lm)[:, None]).astype(np.float32)
        lm = lm - np.array([x0, y0], np.float32)
        self._draw_interior(roi, lm, weights, pose, visemes)
        out = self.portrait.copy()
        out[y0:y1, x0:x1] = roi
        return out

    def apply_pose(self, image: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
        m = head_pose_matrix(head_pose, self.size, self.pivot)
        if m is None:
            return image
        return cv2.warpAffine(
            image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )  # fmt: skip

    def _draw_interior(
        self, roi: np.ndarray, lm: np.ndarray, weights: np.ndarray, pose: np.ndarray | None,
        visemes: np.ndarray | None,
    ) -> None:  # fmt: skip
        up = lm[list(mesh.LIPS_INNER_UPPER)]
        lo = lm[list(mesh.LIPS_INNER_LOWER)]
        if float((lo[2:-2, 1] - up[2:-2, 1]).max()) < 0.6:  # lips closed: draw where they meet
            seam = np.round((up + lo) / 2 * 16).astype(np.int32)
            color = tuple(float(c) for c in self._lip_rgb * 0.55)
            cv2.polylines(roi, [seam], False, color, 1, cv2.LINE_AA, 4)
            return
        jaw_px = float(weights[BASIS_INDEX["jaw"]] * self._jaw_drop)
        self.mouth.paint(roi, up, lo, jaw_px, self._roi_pose(pose), visemes)

    def _roi_pose(self, pose: np.ndarray | None) -> np.ndarray | None:
        """The head pose as an affine of region coordinates."""
        if pose is None:
            return None
        origin = np.array(self.roi[:2], np.float64)
        m = pose.astype(np.float64).copy()
        m[:, 2] += m[:, :2] @ origin - origin
        return m
