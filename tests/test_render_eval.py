"""The render evaluation's per-frame measures, read by real face mesh from real rendered frames."""

from __future__ import annotations

import numpy as np

from avatar.compose.contact import TILE, mouth_closeup
from avatar.compose.render_eval import UtteranceTrace, measure_mouths, summarise
from avatar.face import mesh
from avatar.face.store import AvatarAssets
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


def test_open_jaw_reads_as_a_wider_opening_and_a_longer_chin(default_avatar: AvatarAssets) -> None:
    r = WarpRenderer(default_avatar, 512)
    images = [r.render(motion_frame(jawOpen=jaw)) for jaw in (0.0, 0.8)]
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        m = measure_mouths(images, fm)
    assert np.isfinite(m.opening).all() and np.isfinite(m.chin).all()
    assert m.opening[1] > m.opening[0]
    assert m.chin[1] > m.chin[0]
    assert m.gap[1] > m.gap[0]


def test_mouth_closeup_is_a_tile_centred_on_the_lips(default_avatar: AvatarAssets) -> None:
    img = default_avatar.portrait
    tile = mouth_closeup(img, default_avatar)
    assert tile.shape == (TILE, TILE, 3)
    half = mouth_closeup(img[::2, ::2], default_avatar)  # landmarks scale with the frame
    assert np.abs(tile.astype(int) - half).mean() < 12


def _trace(opening: list[float], chin: list[float]) -> UtteranceTrace:
    n = len(opening)
    return UtteranceTrace(
        t=np.arange(n) / 25, gap=np.linspace(0, 0.2, n), opening=np.array(opening),
        chin=np.array(chin), target=np.linspace(0, 1, n), model=np.linspace(0, 1, n),
        pbm_min=[], vowel=np.zeros(n, bool), silence=np.zeros(n, bool),
    )  # fmt: skip


def test_summary_percentiles_skip_frames_without_a_face() -> None:
    res = summarise("set", "warp", [_trace([0.0, 0.5, np.nan], [1.0, 1.2, np.nan])])
    assert res.open_p50 == 0.25
    assert np.isclose(res.chin_travel, 0.9 * 0.2)
    none = summarise("set", "warp", [_trace([np.nan], [np.nan])])
    assert np.isnan(none.open_p90) and np.isnan(none.chin_travel)
