"""A photo that shows its teeth gets closed, neutral lips; a resting smile relaxes as it talks.

On the real default avatar (the astronaut photo: a wide smile, teeth showing) and a closed-mouth
one (carphone), read back with real face mesh where it matters."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.face import mesh
from avatar.face.neutral import close_lips, shows_teeth
from avatar.face.rig import BASIS_INDEX, NEUTRAL_ELEVATION, NEUTRAL_WIDTH, FaceRig, basis_weights
from avatar.face.store import AvatarAssets, load_avatar
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


def _teeth_share(image: np.ndarray, lm: np.ndarray) -> float:
    """Share of bright, unsaturated (tooth-white) pixels inside the photo's opening."""
    import cv2

    poly = np.vstack(
        [lm[list(mesh.LIPS_INNER_UPPER), :2], lm[list(mesh.LIPS_INNER_LOWER), :2][::-1]]
    )
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    px = image[mask == 1].astype(np.float32)
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1)
    return float(((px.mean(1) > 150) & (sat < 0.15)).mean())


def test_the_lips_close_over_the_teeth_and_nothing_far_from_the_mouth_moves(
    default_avatar: AvatarAssets,
) -> None:
    photo, lm = default_avatar.portrait, default_avatar.landmarks
    assert shows_teeth(lm) and _teeth_share(photo, lm) > 0.2
    closed, closed_lm = close_lips(photo, lm)
    assert _teeth_share(closed, lm) < 0.08  # where the teeth were, lips now (their highlights)
    gap = closed_lm[list(mesh.LIPS_INNER_LOWER), 1] - closed_lm[list(mesh.LIPS_INNER_UPPER), 1]
    assert np.abs(gap).max() < 1e-3
    d = mesh.interocular(lm)
    far = np.linalg.norm(np.indices(photo.shape[:2])[::-1].transpose(1, 2, 0) - lm[14, :2], axis=-1)
    assert np.array_equal(closed[far > 1.6 * d], photo[far > 1.6 * d])


def test_face_mesh_reads_the_closed_photo_as_closed_lips(default_avatar: AvatarAssets) -> None:
    closed, _ = close_lips(default_avatar.portrait, default_avatar.landmarks)
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        (before,) = fm.detect(default_avatar.portrait)
        (after,) = fm.detect(closed)
    d = mesh.interocular(after)
    assert mesh.inner_lip_gap(before) / d > 0.1
    assert mesh.inner_lip_gap(after) / d < 0.02


def test_a_closed_mouth_is_left_alone() -> None:
    carphone = load_avatar("carphone")
    assert not shows_teeth(carphone.landmarks)
    image, lm = close_lips(carphone.portrait, carphone.landmarks)
    assert image is carphone.portrait and lm is carphone.landmarks


def test_a_resting_smile_relaxes_to_a_talkers_mouth(default_avatar: AvatarAssets) -> None:
    rig = FaceRig(close_lips(default_avatar.portrait, default_avatar.landmarks)[1])
    elevation, width = rig.smile()
    assert elevation > 0.1 and width > 0.95  # the astronaut smiles
    talking = rig.landmarks(basis_weights(np.zeros(16), talking=1.0))
    corners = talking[list(mesh.MOUTH_CORNERS)]
    middle = 0.5 * (talking[13] + talking[14])
    assert (middle[1] - corners[:, 1].mean()) / rig.d == pytest.approx(NEUTRAL_ELEVATION, abs=0.01)
    assert np.linalg.norm(corners[1] - corners[0]) / rig.d == pytest.approx(NEUTRAL_WIDTH, abs=0.02)
    resting = rig.landmarks(basis_weights(np.zeros(16), talking=0.0))
    assert resting[61, 1] < talking[61, 1] - 0.05 * rig.d  # at rest the smile is back (softened)


def test_a_face_that_does_not_smile_has_nothing_to_relax() -> None:
    rig = FaceRig(load_avatar("carphone").landmarks)
    assert np.abs(rig.bases[BASIS_INDEX["relax"]]).max() == 0.0


def test_the_rendered_smile_follows_the_talking_envelope(default_avatar: AvatarAssets) -> None:
    r = WarpRenderer(default_avatar, 256)
    rest, talk = motion_frame(), motion_frame()
    talk.talking = 1.0
    a, b = r.render(rest), r.render(talk)
    corner = np.round(r.rig.rest[61, :2]).astype(int)
    y, x = corner[1], corner[0]
    assert (
        np.abs(a[y - 8 : y + 8, x - 8 : x + 8].astype(int) - b[y - 8 : y + 8, x - 8 : x + 8]).mean()
        > 3
    )
