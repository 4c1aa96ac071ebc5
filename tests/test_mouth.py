"""The jaw and the mouth interior on real faces: a closed-mouth video frame (the bundled
``carphone`` avatar) and the smiling default photo (teeth showing; its lips are closed first)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar.face import mesh
from avatar.face.rig import BASIS_INDEX, FaceRig, basis_weights
from avatar.face.store import AvatarAssets, load_avatar
from avatar.motion.channels import VISEME_INDEX
from avatar.render.base import head_pose_matrix
from avatar.render.mouth import Palette, teeth_layer
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


@pytest.fixture(scope="module")
def closed() -> WarpRenderer:
    return WarpRenderer(load_avatar("carphone"), 256)


def _opening_box(r: WarpRenderer, jaw: float) -> tuple[slice, slice]:
    lm = r.rig.landmarks(basis_weights(motion_frame(jawOpen=jaw).blendshapes))
    up, lo = lm[list(mesh.LIPS_INNER_UPPER)], lm[list(mesh.LIPS_INNER_LOWER)]
    x0, x1 = int(up[:, 0].min()) + 3, int(up[:, 0].max()) - 3
    return slice(int(up[5, 1]) + 1, int(lo[5, 1]) - 1), slice(x0, x1)


def test_the_jaw_rotates_about_its_joint() -> None:
    rig = FaceRig(load_avatar("default").landmarks)
    jaw = rig.bases[BASIS_INDEX["jaw"], :, 1]
    lip, chin = jaw[mesh.LOWER_LIP_MID[0]], jaw[mesh.CHIN]
    angles = jaw[[172, 397]]  # the jaw's angles, below the ears
    assert lip > 0.5 * rig.d
    assert 0.5 * lip < chin < lip  # the chin lies behind the lip: it travels less
    assert np.all(angles < 0.3 * chin)
    assert np.all(np.abs(jaw[list(mesh.EYE_LEFT_UPPER + mesh.EYE_RIGHT_UPPER)]) < 1e-6)


def test_a_closed_mouth_photo_gets_teeth_and_a_dark_cavity(closed: WarpRenderer) -> None:
    img = closed.render(motion_frame(jawOpen=0.5)).astype(np.float32)
    rows, cols = _opening_box(closed, 0.5)
    inside = img[rows, cols]
    light = inside.mean(-1)
    top = light[: max(len(light) // 5, 1)]
    assert top.mean() > light.mean() + 20  # the upper teeth under the upper lip
    assert light.min() < 70  # the cavity behind them
    sat = inside.max(-1) - inside.min(-1)
    teeth = (light > np.percentile(light, 85)) & (sat < 60)
    assert teeth.any()  # white-ish, not the lips' red


def test_drawn_teeth_are_separate_crowns() -> None:
    d, w = 60.0, 160
    layer = teeth_layer((60, w), 80.0, np.full(w, 30.0), d, _palette(), upper=True)
    band = layer[24:28, 10:150, :3].mean(axis=(0, 2))  # just above the incisal edge
    dips = (band[1:-1] < band[:-2]) & (band[1:-1] < band[2:]) & (band[1:-1] < band.max() - 8)
    assert dips.sum() >= 6  # the gaps between teeth
    assert layer[32:, :, 3].max() == 0  # nothing below the edge


def test_the_tongue_follows_the_visemes(closed: WarpRenderer) -> None:
    rows, cols = _opening_box(closed, 0.3)
    still = closed.render(motion_frame(jawOpen=0.3)).astype(np.float32)[rows, cols]
    for viseme in ("DD", "TH"):
        m = motion_frame(jawOpen=0.3)
        m.visemes[VISEME_INDEX[viseme]] = 1.0
        tongue = closed.render(m).astype(np.float32)[rows, cols]
        red = (tongue[..., 0] - tongue[..., 2]).mean() - (still[..., 0] - still[..., 2]).mean()
        assert red > 2, viseme  # more tongue seen in the opening


def test_rendering_is_stable_outside_the_mouth_and_jaw(closed: WarpRenderer) -> None:
    a = closed.render(motion_frame(jawOpen=0.30))
    assert np.array_equal(a, closed.render(motion_frame(jawOpen=0.30)))  # no per-frame noise
    b = closed.render(motion_frame(jawOpen=0.34))
    nose = int(closed.rig.rest[mesh.NOSE_TIP, 1])
    assert np.array_equal(a[:nose], b[:nose])  # eyes, brows, forehead, nose: untouched


def test_a_photo_with_teeth_opens_on_drawn_teeth_under_its_upper_lip(
    default_avatar: AvatarAssets,
) -> None:
    r = WarpRenderer(default_avatar, 512)
    talking = motion_frame(jawOpen=0.5)
    talking.talking = 1.0  # (the smile relaxed, as in speech)
    lm = r.rig.landmarks(basis_weights(talking.blendshapes, talking=1.0))
    top, bottom, middle = int(lm[13, 1]) + 2, int(lm[14, 1]) - 2, int(lm[13, 0])
    incisors = slice(middle - int(0.1 * r.d), middle + int(0.1 * r.d))
    column = r.render(talking).astype(np.float32)[top:bottom, incisors].mean(axis=(1, 2))
    assert column[:3].mean() > 120  # the upper incisors, right under the upper lip
    assert column[len(column) // 2] < 60  # the dark cavity below them


def _opening_mask(r: WarpRenderer, jaw: float, pose: np.ndarray) -> np.ndarray:
    """The inner-lip opening at ``jaw`` moved by the 2x3 ``pose``, less its anti-aliased rim."""
    lm = r.rig.landmarks(basis_weights(motion_frame(jawOpen=jaw).blendshapes))
    lm = lm @ pose[:, :2].T + pose[:, 2]
    contour = np.vstack([lm[list(mesh.LIPS_INNER_UPPER)], lm[list(mesh.LIPS_INNER_LOWER)][::-1]])
    mask = np.zeros((r.size, r.size), np.uint8)
    cv2.fillPoly(mask, [np.round(contour).astype(np.int32)], 1)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)


@pytest.mark.parametrize(
    "pose", [(0.0, 0.0, 0.06, 0.01, 0.015, 0.0), (0.0, 0.0, 0.0, 6 / 256, 4 / 256, 0.0)]
)
def test_the_interior_follows_the_head_pose(closed: WarpRenderer, pose: tuple[float, ...]) -> None:
    """Turned and shifted, the open mouth's interior (teeth, tongue, cavity) is the unposed
    frame's moved by the pose's affine: the interior's painter got the head pose. (Painted
    where the unposed mouth was, it differs from the moved frame as much as the unposed does.)"""
    still = closed.render(motion_frame(jawOpen=0.4))
    posed = motion_frame(jawOpen=0.4)
    posed.head_pose = np.array(pose, np.float32)
    moved = closed.render(posed).astype(np.float32)
    m = head_pose_matrix(posed.head_pose, closed.size, closed.pivot)
    assert m is not None and moved.shape == still.shape
    expected = cv2.warpAffine(still, m, (closed.size, closed.size)).astype(np.float32)
    opening = _opening_mask(closed, 0.4, m)  # the face is not tapered there: pose applies fully
    assert opening.sum() > 200
    err = float(np.abs(moved - expected)[opening].mean())
    unposed = float(np.abs(moved - still.astype(np.float32))[opening].mean())
    assert err < 0.4 * unposed, (err, unposed)


def _palette() -> Palette:

    c = np.array
    return Palette(c([220.0, 215, 200]), c([200.0, 120, 120]), c([170.0, 80, 80]),
                   c([50.0, 20, 20]))  # fmt: skip
