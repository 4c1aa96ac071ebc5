"""The phone-driven mouth: the phone table on the engine's frame grid, with its lead."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.data.types import Phone
from avatar.motion.channels import BLENDSHAPE_INDEX, VISEME_INDEX
from avatar.motion.phone_motion import fit_jaw_curve, frame_count, phone_motion, with_jaw_curve

JAW = BLENDSHAPE_INDEX["jawOpen"]
FPS = 25.0


def _seq(*items: tuple[str, float]) -> list[Phone]:
    out, t = [], 0.0
    for ipa, dur in items:
        out.append(Phone(ipa, t, t + dur))
        t += dur
    return out


# "ama" between pauses, off the frame grid: the m (0.41-0.57 s) shows on frames 11-14 at 25 fps
AMA = _seq(("", 0.21), ("a", 0.2), ("m", 0.16), ("a", 0.2), ("", 0.23))


def test_lips_close_on_m_open_on_a_rest_in_pauses() -> None:
    m = phone_motion(AMA, FPS)
    assert len(m) == frame_count(AMA, FPS) == 25
    assert m.blendshapes[12, JAW] < 0.05 and m.visemes[12, VISEME_INDEX["PP"]] == 1.0
    assert m.blendshapes[7, JAW] > 0.5 and m.visemes[7, VISEME_INDEX["aa"]] == 1.0
    assert m.blendshapes[0, JAW] < 0.03 and m.visemes[0, VISEME_INDEX["sil"]] == 1.0
    np.testing.assert_allclose(m.visemes.sum(1), 1.0)


def test_the_lead_shows_each_sound_earlier() -> None:
    still = phone_motion(AMA, FPS, 0.0)
    led = phone_motion(AMA, FPS, 0.04)  # one frame at 25 fps
    np.testing.assert_allclose(led.blendshapes[:-1], still.blendshapes[1:], atol=1e-6)
    closed = np.flatnonzero(led.visemes[:, VISEME_INDEX["PP"]])
    assert closed[0] == np.flatnonzero(still.visemes[:, VISEME_INDEX["PP"]])[0] - 1
    with pytest.raises(ValueError, match="lead"):
        phone_motion(AMA, FPS, -0.01)


def test_frames_past_the_phones_rest() -> None:
    m = phone_motion(AMA, FPS, 0.04, n_frames=40)
    assert len(m) == 40
    assert np.abs(m.blendshapes[30:]).max() == 0.0
    assert (m.visemes[30:, VISEME_INDEX["sil"]] == 1.0).all()


def test_jaw_curve_gives_the_other_distribution_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    phone_jaw, other_jaw = rng.uniform(0, 0.7, 5000), rng.uniform(0, 0.35, 5000)
    curve = fit_jaw_curve(phone_jaw, other_jaw)
    assert np.all(np.diff(curve[0]) > 0) and np.all(np.diff(curve[1]) >= 0)
    assert curve[0][0] == curve[1][0] == 0.0  # rest stays rest
    m = phone_motion(AMA, FPS)
    mapped = with_jaw_curve(m, curve)
    np.testing.assert_allclose(mapped.blendshapes[:, JAW], m.blendshapes[:, JAW] / 2, atol=0.02)
    others = [i for i in range(m.blendshapes.shape[1]) if i != JAW]
    np.testing.assert_array_equal(mapped.blendshapes[:, others], m.blendshapes[:, others])
    np.testing.assert_array_equal(mapped.visemes, m.visemes)


def test_jaw_curve_keeps_rest_and_tied_closures_closed() -> None:
    # a third of the frames are P/B/M at exactly 0.02; the other mouth never rests on these frames
    phone_jaw = np.concatenate([np.full(300, 0.02), np.linspace(0.1, 0.7, 600)])
    other_jaw = np.linspace(0.03, 0.5, 900)
    curve = fit_jaw_curve(phone_jaw, other_jaw)
    assert np.interp(0.0, *curve) == 0.0
    closed = np.interp([0.02, 0.0200005], *curve)  # float noise around the tie changes nothing
    np.testing.assert_allclose(closed, 0.03, atol=1e-3)  # the lowest of the tied quantiles'
