"""The inside of the mouth, painted between the displaced lips of the warp renderer.

Built once per avatar, in the warp renderer's region coordinates:

- **Teeth layers** (RGBA), one for the upper teeth, fixed to the skull, one for the lower teeth,
  carried by the jaw. Teeth are drawn (a photo that shows its own teeth has had its lips closed
  over them, :mod:`avatar.face.neutral`): individual crowns (central and lateral
  incisors, canines, premolars; narrower lower ones), rounded incisal corners and a pointed canine
  cusp, a scalloped gum line, shading across each crown and darker towards the back of the arch, a
  translucent incisal edge, soft gaps between teeth, supersampled 3x (anti-aliased).
- **Colours from the photo**: teeth from the whites of the eyes (same light, same camera), gums and
  tongue from the lips, the cavity a dark version of the lips.
- **The photo's look**: a blur of about half a source pixel (the portrait was upscaled from the
  source by ``interocular_px / source_interocular_px``) and a fixed noise texture with the
  portrait's own noise level, so the painted interior is as sharp and as grainy as the skin around
  it. The noise is fixed in face coordinates: nothing flickers from frame to frame.

Per frame (on the bounding box of the opening only): the cavity (darkest under the palate), the
tongue (a dome behind the lower teeth, more of it seen as the jaw opens; its tip rises behind the
upper teeth on /t d n l/ and shows between the teeth on /th/, from the motion model's visemes),
the lower teeth shifted by the jaw, the upper teeth, soft shadows under the upper lip and above the
lower one and towards the corners; then the photo's blur and noise, composited inside the inner-lip
contour with an anti-aliased, feathered edge that slightly overlaps the lips (no dark outline).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.face import mesh
from avatar.motion.channels import VISEME_INDEX

SUPERSAMPLE = 3
# Crown widths seen from the front (inter-ocular units), from the midline outwards, and heights.
UPPER_WIDTHS = (0.135, 0.10, 0.08, 0.062, 0.055, 0.05, 0.05)
UPPER_HEIGHTS = (0.17, 0.14, 0.16, 0.12, 0.11, 0.10, 0.10)
LOWER_WIDTHS = (0.085, 0.09, 0.075, 0.062, 0.055, 0.05, 0.05)
LOWER_HEIGHTS = (0.13, 0.13, 0.15, 0.11, 0.10, 0.10, 0.10)
TEETH_SHOW = 0.035  # upper incisal edge below the rest stomion (d), at the midline
OVERBITE = 0.04  # lower incisal edge above the upper one at rest (hidden behind it)
JAW_TEETH = 0.75  # the lower teeth follow the jaw less than the lower lip's middle does
GUM_BAND = 0.08  # gum drawn above/below each crown (d)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass(slots=True)
class Palette:
    teeth: np.ndarray  # (3,) float32 RGB
    gums: np.ndarray
    tongue: np.ndarray
    cavity: np.ndarray


def palette(portrait: np.ndarray, rest: np.ndarray) -> Palette:
    """Colours of the interior from the photo: teeth from the eye whites, the rest from the lips."""
    lips = _region_median(portrait, rest, mesh.LIPS_OUTER_UPPER, mesh.LIPS_OUTER_LOWER)
    sclera = _sclera(portrait, rest)
    teeth = sclera * np.array([0.97, 0.95, 0.88], np.float32)
    return Palette(
        teeth=np.clip(teeth, 0, 250).astype(np.float32),
        gums=np.clip(lips * np.array([1.08, 0.78, 0.82]) + 18, 0, 255).astype(np.float32),
        tongue=np.clip(lips * np.array([1.0, 0.68, 0.7]) + 16, 0, 255).astype(np.float32),
        cavity=(lips * np.array([0.34, 0.16, 0.17])).astype(np.float32),
    )


def _region_median(image: np.ndarray, lm: np.ndarray, upper: tuple[int, ...],
                   lower: tuple[int, ...]) -> np.ndarray:  # fmt: skip
    mask = np.zeros(image.shape[:2], np.uint8)
    poly = np.vstack([lm[list(upper), :2], lm[list(lower), :2][::-1]])
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    inner = np.vstack([lm[list(mesh.LIPS_INNER_UPPER), :2],
                       lm[list(mesh.LIPS_INNER_LOWER), :2][::-1]])  # fmt: skip
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 0)
    pixels = image[mask == 1]
    if len(pixels) < 10:
        return np.array([150, 80, 80], np.float32)
    return np.median(pixels, axis=0).astype(np.float32)


def _sclera(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Tooth white under the photo's light: the whites of the eyes (bright, unsaturated pixels
    inside the eye contours), else an off-white scaled by the face's exposure."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for up, lo in ((mesh.EYE_LEFT_UPPER, mesh.EYE_LEFT_LOWER),
                   (mesh.EYE_RIGHT_UPPER, mesh.EYE_RIGHT_LOWER)):  # fmt: skip
        poly = np.vstack([lm[list(up), :2], lm[list(lo), :2][::-1]])
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    px = image[mask == 1].astype(np.float32)
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1.0) if len(px) else px
    keep = (sat < 0.28) & (px.mean(1) >= np.percentile(px.mean(1), 50)) if len(px) else sat
    if len(px) >= 20 and keep.sum() >= 5:
        white = np.median(px[keep], axis=0)
        return white * (225.0 / max(float(white.max()), 1.0)) ** 0.5  # lifted towards a tooth's
    skin = _region_median(image, lm, (234, 93, 132, 58, 172), (234, 227, 137, 177, 215))
    exposure = float(np.clip(skin.mean() / 160.0, 0.6, 1.1))
    return np.array([228, 220, 202], np.float32) * exposure


def _crowns(a: np.ndarray, widths: tuple[float, ...], d: float) -> tuple[np.ndarray, np.ndarray]:
    """Tooth index and position across the crown (0 medial .. 1 distal) at |x - centre| = ``a``."""
    bounds = np.concatenate([[0.0], np.cumsum(widths)]) * d
    k = np.clip(np.searchsorted(bounds, a, side="right") - 1, 0, len(widths) - 1)
    s = (a - bounds[k]) / (bounds[k + 1] - bounds[k])
    return k, np.clip(s, 0.0, 1.0)


def teeth_layer(
    shape: tuple[int, int], centre: float, edge: np.ndarray, d: float, pal: Palette, upper: bool
) -> np.ndarray:
    """RGBA (h, w, 4) float32 of one row of drawn teeth, anti-aliased by supersampling.

    ``edge`` (w,) is the incisal edge's height in every column; upper crowns grow up from it,
    lower ones down. Alpha covers crowns and the gum beyond them, nothing else.
    """
    h, w = shape
    n = SUPERSAMPLE
    xs = (np.arange(w * n, dtype=np.float32) + 0.5) / n - 0.5
    ys = ((np.arange(h * n, dtype=np.float32) + 0.5) / n - 0.5)[:, None]
    edge_s = np.interp(xs, np.arange(w), edge)[None, :]
    widths, heights = (UPPER_WIDTHS, UPPER_HEIGHTS) if upper else (LOWER_WIDTHS, LOWER_HEIGHTS)
    a = np.abs(xs - centre)
    k, s = _crowns(a, widths, d)
    crown = np.asarray(heights)[k] * d
    # rounded incisor corners, a pointed canine cusp
    tip = np.where(k == 2, 0.035 * d * np.abs(2 * s - 1) ** 1.4, 0.02 * d * np.abs(2 * s - 1) ** 6)
    into = (ys - edge_s) * (-1.0 if upper else 1.0)  # distance from the edge into the crown
    gum_line = crown - 0.025 * d * np.sin(np.pi * s)  # scalloped: higher between teeth
    tooth = (into >= tip) & (into <= gum_line)
    gum = (into > gum_line) & (into <= gum_line + GUM_BAND * d)
    rgb = np.empty((h * n, w * n, 3), np.float32)
    back = 1.0 - 0.5 * np.clip(a / (0.45 * d), 0, 1) ** 2  # the arch turns away from the light
    across = 0.8 + 0.2 * np.sin(np.pi * s)  # a rounded crown
    along = np.clip(into / np.maximum(crown, 1e-3), 0, 1)
    cervical = 1.0 - 0.12 * along  # slightly darker and warmer towards the gum
    shade = (back * across)[None, :] * cervical
    rgb[:] = pal.teeth * shade[..., None]
    translucent = np.clip(1 - (into - tip) / (0.018 * d), 0, 1) * 0.25  # the incisal edge
    rgb += (pal.cavity * 2.0 - rgb) * translucent[..., None]
    gap = np.exp(-np.minimum(s, 1 - s) * (np.asarray(widths)[k] * d) / 0.9)  # soft gaps
    rgb *= (1.0 - 0.35 * gap)[None, :, None]
    gum_rgb = pal.gums * (back[None, :] * (0.85 + 0.15 * along))[..., None]
    rgb = np.where(gum[..., None], gum_rgb, rgb)
    alpha = (tooth | gum).astype(np.float32)
    side = a < 0.9 * d  # nothing past the last molars
    alpha *= side[None, :]
    layer = np.dstack([rgb, alpha])
    out: np.ndarray = cv2.resize(layer, (w, h), interpolation=cv2.INTER_AREA)
    return out.astype(np.float32)  # every frame composites it: float64 doubled that work


def noise_level(image: np.ndarray, lm: np.ndarray) -> float:
    """Std of the portrait's fine grain on the cheeks (luminance minus a blurred copy)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = gray - cv2.GaussianBlur(gray, (0, 0), 1.2)
    d = mesh.interocular(lm)
    values = []
    for idx in (205, 425):  # cheek centres
        x, y = np.round(lm[idx, :2]).astype(int)
        r = max(int(0.08 * d), 2)
        patch = fine[max(y - r, 0) : y + r, max(x - r, 0) : x + r]
        if patch.size:
            values.append(float(np.median(np.abs(patch - np.median(patch)))) * 1.4826)
    return float(np.clip(np.median(values) if values else 0.0, 0.0, 12.0))


class MouthInterior:
    """Paints the mouth interior of one avatar into warped face regions (region coordinates)."""

    def __init__(
        self, region: np.ndarray, rest: np.ndarray, neutral: np.ndarray, d: float,
        source_px: float,
    ) -> None:  # fmt: skip
        """``region``: the portrait's face region (closed lips); ``rest``: its landmarks there
        (for colours); ``neutral``: the landmarks of its closed, relaxed mouth (where the teeth
        sit: the upper row fixed to the skull under the lips' middle)."""
        self.d = d
        self.rest = rest  # (478, 2) in region coordinates
        self.pal = palette(region, rest)
        self.blur = 0.45 * source_px if source_px > 1.2 else 0.0
        rng = np.random.default_rng(0)
        level = noise_level(region, rest)
        self.noise = (rng.standard_normal(region.shape[:2]) * level).astype(np.float32)
        up = neutral[list(mesh.LIPS_INNER_UPPER)]
        lo = neutral[list(mesh.LIPS_INNER_LOWER)]
        self.centre = float(up[[0, -1], 0].mean())
        self.half = max(float(abs(up[-1, 0] - up[0, 0])) / 2, 1.0)
        xs = np.arange(region.shape[1], dtype=np.float32)
        order = np.argsort(up[:, 0])
        stomion = 0.5 * (np.interp(xs, up[order, 0], up[order, 1])
                         + np.interp(xs, lo[order, 0], lo[order, 1]))  # fmt: skip
        u = np.clip((xs - self.centre) / self.half, -1.5, 1.5)
        self.edge = stomion + d * (TEETH_SHOW * (1 - 0.6 * u * u) - 0.04 * u * u)
        self._columns = np.arange(len(self.edge))
        shape = region.shape[:2]
        self.upper = teeth_layer(shape, self.centre, self.edge, d, self.pal, upper=True)
        self.lower = teeth_layer(shape, self.centre, self.edge - OVERBITE * d, d, self.pal,
                                 upper=False)  # fmt: skip

    def paint(
        self, roi: np.ndarray, up: np.ndarray, lo: np.ndarray, jaw_px: float,
        pose: np.ndarray | None, visemes: np.ndarray | None,
    ) -> None:  # fmt: skip
        """Paint into ``roi`` inside the inner-lip contour ``up``/``lo`` (11, 2 each, region
        coordinates, displaced). ``jaw_px``: how far the jaw has dropped (pixels, before pose);
        ``pose``: the region-coordinate affine of the head (None: none)."""
        up, lo = _smooth(up), _smooth(lo)
        box = self._box(up, lo, roi.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        xs = np.arange(bx0, bx1, dtype=np.float32)
        ys = np.arange(by0, by1, dtype=np.float32)[:, None]
        top = _curve(up, xs)[None, :]
        bottom = _curve(lo, xs)[None, :]
        gap = np.maximum(bottom - top, 1e-3)
        # rest-frame coordinates of the box (the head pose undone)
        gx, gy = np.meshgrid(xs, ys[:, 0])
        if pose is not None:  # (Python floats: the arithmetic stays float32)
            (a, b, c), (e, f, g) = cv2.invertAffineTransform(pose).tolist()
            rx, ry = a * gx + b * gy + c, e * gx + f * gy + g
        else:
            rx, ry = gx, gy
        teeth_drop = JAW_TEETH * jaw_px
        edge = np.interp(rx, self._columns, self.edge).astype(np.float32)  # upper incisal edge
        rgb = self._cavity_and_tongue(rx, ry, edge, top, gap, teeth_drop, visemes)
        for layer, shift in ((self.lower, teeth_drop), (self.upper, 0.0)):
            got = cv2.remap(layer, rx, (ry - shift).astype(np.float32), cv2.INTER_LINEAR,
                            borderValue=(0, 0, 0, 0))  # fmt: skip
            a = got[..., 3:4]
            rgb = rgb * (1 - a) + got[..., :3] * a
        if visemes is not None:  # /th/: the tongue tip between the teeth, in front of them
            rgb = self._tongue_between_teeth(rgb, rx, ry, edge, teeth_drop, float(visemes[_TH]))
        rgb *= self._shadows(xs, ys, top, bottom, gap)[..., None]
        if self.blur:
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.blur)
        rgb += self.noise[by0:by1, bx0:bx1, None]
        alpha = self._mask(up, lo, box)
        patch = roi[by0:by1, bx0:bx1].astype(np.float32)
        roi[by0:by1, bx0:bx1] = np.clip(patch + (rgb - patch) * alpha + 0.5, 0, 255).astype(
            np.uint8
        )

    def _box(
        self, up: np.ndarray, lo: np.ndarray, shape: tuple[int, ...]
    ) -> tuple[int, int, int, int] | None:
        poly = np.vstack([up, lo])
        bx0, by0 = np.floor(poly.min(0)).astype(int) - 2
        bx1, by1 = np.ceil(poly.max(0)).astype(int) + 3
        bx0, by0 = max(bx0, 0), max(by0, 0)
        bx1, by1 = min(bx1, shape[1]), min(by1, shape[0])
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            return None
        return int(bx0), int(by0), int(bx1), int(by1)

    def _cavity_and_tongue(
        self, rx: np.ndarray, ry: np.ndarray, edge: np.ndarray, top: np.ndarray, gap: np.ndarray,
        teeth_drop: float, visemes: np.ndarray | None,
    ) -> np.ndarray:  # fmt: skip
        d, pal = self.d, self.pal
        v = np.clip((ry - top) / gap, 0, 1)  # 0 under the upper lip, 1 at the lower
        cavity = pal.cavity * (0.45 + 0.8 * v)[..., None]  # darkest under the palate
        u = (rx - self.centre) / self.half
        low_edge = edge - OVERBITE * d + teeth_drop
        dome = np.sqrt(np.clip(1 - (u / 0.8) ** 2, 0, 1))
        rise = (0.015 * d + 0.22 * teeth_drop) * dome  # more tongue seen as the jaw opens
        tip = 0.0 if visemes is None else float(visemes[_DD] + visemes[_NN] + 0.5 * visemes[_TH])
        tip_w = np.sqrt(np.clip(1 - (u / 0.45) ** 2, 0, 1))
        surface = low_edge - rise
        surface = surface - min(tip, 1.0) * tip_w * np.maximum(surface - edge - 0.01 * d, 0)
        depth = np.clip((ry - surface) / (0.12 * d), 0, 1)  # into the tongue from its surface
        light = 0.7 + 0.35 * (1 - np.abs(u)) - 0.25 * (1 - depth)  # rounded, the back in shadow
        tongue = pal.tongue * np.clip(light, 0.3, 1.1)[..., None]
        a = np.clip((ry - surface) / 1.5 + 0.5, 0, 1)[..., None]
        out: np.ndarray = cavity * (1 - a) + tongue * a
        return out.astype(np.float32)

    def _tongue_between_teeth(
        self, rgb: np.ndarray, rx: np.ndarray, ry: np.ndarray, edge: np.ndarray,
        teeth_drop: float, th: float,
    ) -> np.ndarray:  # fmt: skip
        if th < 0.05:
            return rgb
        d = self.d
        u = (rx - self.centre) / self.half
        y0, y1 = edge - 0.02 * d, edge - OVERBITE * d + teeth_drop + 0.02 * d
        across = 1 - (u / 0.35) ** 2
        inside = across * np.clip((ry - y0) / 1.5, 0, 1) * np.clip((y1 - ry) / 1.5, 0, 1)
        a = (np.clip(inside, 0, 1) * min(th * 1.5, 1.0))[..., None]
        return rgb * (1 - a) + self.pal.tongue * 1.05 * a

    def _shadows(
        self, xs: np.ndarray, ys: np.ndarray, top: np.ndarray, bottom: np.ndarray,
        gap: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        d = self.d
        under_upper = 0.8 + 0.2 * _smoothstep((ys - top) / (0.035 * d))
        over_lower = 0.8 + 0.2 * _smoothstep((bottom - ys) / (0.03 * d))
        corners = 1.0 - 0.45 * np.clip(np.abs(xs - self.centre) / self.half, 0, 1)[None, :] ** 3
        out: np.ndarray = under_upper * over_lower * corners
        return out

    def _mask(self, up: np.ndarray, lo: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Anti-aliased opening, grown by a third of a pixel over the lips' inner edge and
        feathered, so no dark rim of the photo's lip edge shows around it."""
        bx0, by0, bx1, by1 = box
        mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        shift = 4
        poly = np.vstack([up, lo[::-1]])
        pts = np.round((poly - [bx0, by0]) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.6)
        return np.clip(alpha * 1.25, 0, 1)[..., None]


def _smooth(points: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Chaikin corner cutting of a lip contour (ends kept): a curve, not a polygon."""
    for _ in range(rounds):
        a, b = points[:-1], points[1:]
        cut = np.empty((2 * len(a), 2), np.float32)
        cut[0::2], cut[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        points = np.vstack([points[:1], cut[1:-1], points[-1:]])
    return points


def _curve(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(xs, points[order, 0], points[order, 1]).astype(np.float32)


_DD, _NN, _TH = VISEME_INDEX["DD"], VISEME_INDEX["nn"], VISEME_INDEX["TH"]
