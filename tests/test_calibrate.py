"""The jaw calibrated per face by what face mesh reads; the P/B/M viseme sealing the lips; the
talking envelope that relaxes a resting smile."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from avatar.compose.calibrate import WEIGHTS, calibrate_mouth, fit_jaw_map
from avatar.data.talkers import OPENING_START, canonical_opening
from avatar.face import mesh
from avatar.face.rig import FaceRig
from avatar.face.store import AvatarAssets, load_avatar
from avatar.frames import MotionFrame
from avatar.motion.channels import VISEME_INDEX
from avatar.motion.idle import IdleAnimator
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


def test_the_map_inverts_the_readings_onto_the_canonical_curve() -> None:
    read = np.clip(1.6 * (WEIGHTS - 0.2), 0, None)  # a face whose lips part at weight 0.2
    jaws, weights = fit_jaw_map(read)
    assert jaws[:2] == [0.0, OPENING_START] and weights[:2] == [0.0, 0.2]
    assert all(b >= a for a, b in itertools.pairwise(weights))
    for j in (0.3, 0.5, 0.7):
        w = np.interp(j, jaws, weights)
        # the map is stored rounded (avatar.json), so it inverts to that precision
        want = canonical_opening(np.array([j]))[0]
        assert np.interp(w, WEIGHTS, read) == pytest.approx(want, abs=1e-3)


def test_readings_that_never_reach_the_curve_take_the_widest_weight() -> None:
    read = np.clip(0.4 * WEIGHTS, 0, None)  # a mouth face mesh never sees wider than 0.4
    jaws, weights = fit_jaw_map(read)
    assert weights[-1] == pytest.approx(1.0)
    assert np.interp(0.3, jaws, weights) < 1.0


@pytest.fixture(scope="module")
def carphone() -> AvatarAssets:
    return load_avatar("carphone")


def test_a_calibrated_face_opens_as_the_canonical_curve_says(carphone: AvatarAssets) -> None:
    assets = AvatarAssets(carphone.name, carphone.portrait, carphone.landmarks,
                          {"jaw_map": calibrate_mouth(carphone)})  # fmt: skip
    renderer = WarpRenderer(assets)
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        for jaw in (0.3, 0.5):
            frame = motion_frame(jawOpen=jaw)
            frame.talking = 1.0
            (face,) = fm.detect(renderer.render(frame))
            want = float(canonical_opening(np.array([jaw]))[0])
            assert mesh.mouth_opening(face) == pytest.approx(want, abs=0.1)


def test_the_rig_applies_the_faces_jaw_map(carphone: AvatarAssets) -> None:
    rig = FaceRig(carphone.landmarks, {"jaw": [0.0, 1.0], "weight": [0.0, 0.5]})
    assert rig.weights(motion_frame(jawOpen=0.8))[1] == pytest.approx(0.4)
    assert FaceRig(carphone.landmarks).weights(motion_frame(jawOpen=0.8))[1] == pytest.approx(0.8)


def test_the_bilabial_viseme_seals_lips_the_jaw_left_open(carphone: AvatarAssets) -> None:
    rig = FaceRig(carphone.landmarks)

    def gap(frame: MotionFrame) -> float:
        lm = rig.landmarks(rig.weights(frame))
        return float(lm[mesh.LOWER_LIP_MID[1], 1] - lm[mesh.UPPER_LIP_MID[1], 1])

    open_b = motion_frame(jawOpen=0.2)
    sealed = motion_frame(jawOpen=0.2)
    sealed.visemes[VISEME_INDEX["PP"]] = 0.5
    assert gap(open_b) > 0.02 * rig.d and gap(sealed) < 0.01 * rig.d


def test_talking_rises_with_speech_and_falls_after_it() -> None:
    idle = IdleAnimator()
    values = []
    for i in range(100):  # 1 s of speech, then 3 s of silence, at 25 fps
        frame = motion_frame(index=i)
        frame.is_speech = i < 25
        values.append(idle.apply(frame).talking)
    assert values[0] == 0.0 and values[24] > 0.95  # up within a second of speech
    assert values[30] > 0.5  # a short pause keeps the smile relaxed
    assert values[99] < 0.05  # and it comes back in the silence after


def test_avatar_calibrate_writes_the_jaw_map_of_an_older_folder(
    carphone: AvatarAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avatar.cli import main
    from avatar.face.store import save_avatar

    older = AvatarAssets("old", carphone.portrait, carphone.landmarks, {"source": "x.png"})
    save_avatar(older, tmp_path)  # as an earlier `avatar prepare` left it: no jaw_map
    assert main(["calibrate", str(tmp_path)]) == 0
    info = load_avatar(str(tmp_path)).info
    assert info["source"] == "x.png" and len(info["jaw_map"]["jaw"]) == len(
        info["jaw_map"]["weight"]
    )
    assert "jaw_map written" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "missing")]) == 2
