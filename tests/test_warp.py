"""The face rig and the warp renderer, checked on the real default avatar with real face mesh."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from avatar.face import mesh
from avatar.face.rig import BASIS_INDEX, FaceRig, basis_weights
from avatar.face.store import AvatarAssets
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


@pytest.fixture(scope="module")
def renderer(default_avatar: AvatarAssets) -> WarpRenderer:
    return WarpRenderer(default_avatar, 256)


def _gap(lm: np.ndarray) -> float:
    up = lm[list(mesh.LIPS_INNER_UPPER[2:-2]), 1]
    lo = lm[list(mesh.LIPS_INNER_LOWER[2:-2]), 1]
    return float((lo - up).max())


def test_rig_closes_the_portraits_smile_at_rest(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(default_avatar.landmarks)
    assert mesh.inner_lip_gap(default_avatar.landmarks) > 10  # the photo shows teeth
    assert _gap(rig.landmarks(basis_weights(np.zeros(16)))) <= 0.0


def test_jaw_opens_monotonically_and_bilabials_seal(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(default_avatar.landmarks)
    gaps = [_gap(rig.landmarks(basis_weights(motion_frame(jawOpen=j).blendshapes))) for j in
            (0.1, 0.3, 0.5, 0.7)]  # fmt: skip
    assert all(b > a for a, b in itertools.pairwise(gaps))
    pp = motion_frame(jawOpen=0.15, mouthPressLeft=0.45, mouthPressRight=0.45)
    assert _gap(rig.landmarks(basis_weights(pp.blendshapes))) <= 0.0


def test_blink_brings_the_lids_together(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(default_avatar.landmarks)
    w = basis_weights(np.zeros(16), blink=1.0)
    assert w[BASIS_INDEX["blink"]] == 1.0
    lm = rig.landmarks(w)
    for upper, lower in ((mesh.EYE_LEFT_UPPER, mesh.EYE_LEFT_LOWER),
                         (mesh.EYE_RIGHT_UPPER, mesh.EYE_RIGHT_LOWER)):  # fmt: skip
        opening = lm[list(lower[2:-2]), 1] - lm[list(upper[2:-2]), 1]
        rest = rig.rest[list(lower[2:-2]), 1] - rig.rest[list(upper[2:-2]), 1]
        assert opening.max() < 0.2 * rest.max()


def test_render_is_an_rgb_frame_that_changes_only_the_face(renderer: WarpRenderer) -> None:
    img = renderer.render(motion_frame(jawOpen=0.5))
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    x0, y0, x1, y1 = renderer.roi
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(img[outside], renderer.portrait[outside])


def test_open_mouth_shows_a_dark_cavity_and_closed_lips_do_not(renderer: WarpRenderer) -> None:
    lm = renderer.rig.rest[list(mesh.LIPS_OUTER_UPPER + mesh.LIPS_OUTER_LOWER)]
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)

    def dark_share(jaw: float) -> float:
        mouth = renderer.render(motion_frame(jawOpen=jaw))[y0 : y1 + 15, x0:x1]
        return float((mouth.mean(-1) < 70).mean())

    assert dark_share(0.0) < 0.02
    assert dark_share(0.6) > 0.08


def test_face_mesh_reads_the_rendered_mouth_opening(default_avatar: AvatarAssets) -> None:
    r = WarpRenderer(default_avatar, 512)
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        gaps = []
        for jaw in (0.0, 0.3, 0.6):
            faces = fm.detect(r.render(motion_frame(jawOpen=jaw)))
            assert len(faces) == 1
            gaps.append(mesh.inner_lip_gap(faces[0]) / mesh.interocular(faces[0]))
        pp = fm.detect(
            r.render(motion_frame(jawOpen=0.05, mouthPressLeft=0.4, mouthPressRight=0.4))
        )
        pp_gap = mesh.inner_lip_gap(pp[0]) / mesh.interocular(pp[0])
    assert gaps[0] < 0.02 and pp_gap < 0.02  # lips seen closed
    assert gaps[0] < gaps[1] < gaps[2] and gaps[2] > 0.12


def test_head_pose_moves_the_image(renderer: WarpRenderer) -> None:
    still = renderer.render(motion_frame())
    m = motion_frame()
    m.head_pose = np.array([0.03, 0, 0.02, 0, 0, 0], np.float32)
    moved = renderer.render(m)
    assert np.abs(moved.astype(int) - still).mean() > 2


def test_one_renderer_draws_for_several_sessions_at_once(renderer: WarpRenderer) -> None:
    """The server shares one warp renderer per avatar between sessions on executor threads:
    drawing keeps no state, so concurrent frames equal the same frames drawn one by one."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [motion_frame(i, jawOpen=(i % 7) / 7, mouthFunnel=(i % 3) / 4) for i in range(24)]
    alone = [renderer.render(m) for m in frames]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(renderer.render, frames * 4))
    assert all(np.array_equal(a, b) for a, b in zip(alone * 4, together, strict=True))
