"""``avatar prepare``: find one face in a portrait, align and crop it, store what renderers need."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from avatar.errors import FaceError
from avatar.face import mesh
from avatar.face.image import load_rgb, save_rgb
from avatar.face.store import AvatarAssets, save_avatar

MIN_INTEROCULAR_PX = 28  # below this the mouth is a few pixels wide: nothing to animate
CROP_EYE_UNITS = 4.0  # side of the square crop, in inter-ocular distances
CROP_CENTER_BELOW_EYES = 0.55  # crop centre below the eye midpoint, same unit


def find_one_face(rgb: np.ndarray, fm: mesh.FaceMesh, what: str) -> np.ndarray:
    faces = fm.detect(rgb)
    if not faces:
        raise FaceError(f"{what}: no face found; use a frontal photo with the whole face visible")
    if len(faces) > 1:
        raise FaceError(f"{what}: {len(faces)} faces found; crop the photo to one person")
    return faces[0]


def alignment(lm: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity that levels the eyes and frames the face in a ``size`` square."""
    left, right = mesh.eye_centers(lm)
    d = float(np.linalg.norm(right - left))
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    mid = (left + right) / 2
    scale = size / (CROP_EYE_UNITS * d)
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), angle, scale)
    # move the eye midpoint to its place in the crop
    target = np.array([size / 2, size / 2 - CROP_CENTER_BELOW_EYES * d * scale])
    m[:, 2] += target - mid
    return m


def regions(lm: np.ndarray) -> dict[str, list[int]]:
    """Boxes (x0, y0, x1, y1) of the mouth and eyes, padded, in portrait pixels."""

    def box(idx: tuple[int, ...], pad: float) -> list[int]:
        p = lm[list(idx), :2]
        lo, hi = p.min(0), p.max(0)
        m = pad * (hi - lo).max()
        return [int(lo[0] - m), int(lo[1] - m), int(np.ceil(hi[0] + m)), int(np.ceil(hi[1] + m))]

    return {
        "mouth_box": box(mesh.LIPS_OUTER_UPPER + mesh.LIPS_OUTER_LOWER, 0.25),
        "eye_left_box": box(mesh.EYE_LEFT_UPPER + mesh.EYE_LEFT_LOWER, 0.3),
        "eye_right_box": box(mesh.EYE_RIGHT_UPPER + mesh.EYE_RIGHT_LOWER, 0.3),
    }


def draw_preview(assets: AvatarAssets) -> np.ndarray:
    img = assets.portrait.copy()
    lm = assets.landmarks
    for x, y in lm[:468, :2]:
        cv2.circle(img, (round(x), round(y)), 1, (80, 220, 255), -1, cv2.LINE_AA)
    for contour in (mesh.LIPS_OUTER_UPPER, mesh.LIPS_OUTER_LOWER, mesh.LIPS_INNER_UPPER,
                    mesh.LIPS_INNER_LOWER):  # fmt: skip
        pts = np.round(lm[list(contour), :2]).astype(np.int32)
        cv2.polylines(img, [pts], False, (255, 60, 60), 1, cv2.LINE_AA)
    for key in ("mouth_box", "eye_left_box", "eye_right_box"):
        x0, y0, x1, y1 = assets.info[key]
        cv2.rectangle(img, (x0, y0), (x1, y1), (60, 255, 60), 1)
    return img


def prepare_portrait(
    image_path: Path, out_dir: Path, name: str | None = None, size: int = 512
) -> AvatarAssets:
    """Detect, align, crop to ``size`` x ``size``, re-detect on the crop, save with a preview."""
    rgb = load_rgb(image_path)
    with mesh.FaceMesh(max_faces=2, static=True) as fm:
        lm = find_one_face(rgb, fm, str(image_path))
        d = mesh.interocular(lm)
        if d < MIN_INTEROCULAR_PX:
            raise FaceError(
                f"{image_path}: the face is too small ({d:.0f} px between the eyes, need "
                f"{MIN_INTEROCULAR_PX}); use a closer or larger photo"
            )
        m = alignment(lm, size)
        crop = cv2.warpAffine(
            rgb, m, (size, size), flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT101,
        )  # fmt: skip
        crop_lm = find_one_face(crop, fm, f"{image_path} (aligned crop)")
    info = {
        "source": Path(image_path).name,
        "source_interocular_px": round(d, 1),
        "interocular_px": round(mesh.interocular(crop_lm), 2),
        **regions(crop_lm),
    }
    assets = AvatarAssets(name or out_dir.name, crop, crop_lm, info, out_dir)
    save_avatar(assets, out_dir)
    save_rgb(out_dir / "preview.png", draw_preview(assets))
    return assets
