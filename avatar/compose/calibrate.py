"""One mouth per sound on any face: the jaw calibrated by what face mesh reads from the pixels.

The rig opens every face's lips by the same share of its own mouth width (:mod:`avatar.face.rig`),
but what a viewer sees also depends on the photo: thin dark slits between light lips read as
closed on one face and open on another (face mesh read 0.00 on the astronaut and 0.11 on Grace
Hopper for the same rig opening). So ``avatar prepare`` renders the new avatar at a range of jaw
weights (talking), reads each frame back with face mesh and stores a monotone map from the motion
model's ``jawOpen`` to the rig's jaw weight (``avatar.json`` ``jaw_map``) that makes the opening
face mesh reads follow one curve on every face: :func:`canonical_opening`, fitted to real talkers
(on 20 real talkers' voiced frames the opening's p50/p90/p95 are 0.10/0.29/0.36 where the motion
model's jawOpen on the same sound is 0.19/0.36/0.42: about 1.1 x (jawOpen - 0.1)).
"""

from __future__ import annotations

import numpy as np

from avatar.data.talkers import OPENING_START, canonical_opening
from avatar.face import mesh
from avatar.face.store import AvatarAssets, save_info
from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX, BLENDSHAPES, VISEMES
from avatar.render.warp import WarpRenderer

WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # rig jaw weights rendered
POSES = ((0.0, 0.0), (0.02, -0.01), (-0.02, 0.01))  # (yaw, roll) of the readings averaged
VISIBLE = 0.03  # an opening face mesh reads below this is noise around closed lips


def read_openings(renderer: WarpRenderer, fm: mesh.FaceMesh) -> np.ndarray:
    """Face mesh's opening on frames rendered at each of :data:`WEIGHTS` (talking), averaged
    over a few head poses, made non-decreasing."""
    out = []
    for w in WEIGHTS:
        values = []
        for yaw, roll in POSES:
            bs = np.zeros(len(BLENDSHAPES), np.float32)
            bs[BLENDSHAPE_INDEX["jawOpen"]] = w
            frame = MotionFrame(0, 0, bs, np.zeros(len(VISEMES), np.float32), talking=1.0)
            frame.head_pose = np.array([yaw, 0.0, roll, 0.0, 0.0, 0.0], np.float32)
            faces = fm.detect(renderer.render(frame))
            if faces:
                values.append(mesh.mouth_opening(faces[0]))
        out.append(float(np.mean(values)) if values else np.nan)
    read = np.asarray(out)
    read = np.where(np.isfinite(read), read, 0.0)
    return np.maximum.accumulate(read)


def fit_jaw_map(read: np.ndarray) -> tuple[list[float], list[float]]:
    """(jawOpen points, rig jaw weights): where the rig must be for face mesh to read
    :func:`canonical_opening`. Up to :data:`OPENING_START` the weight grows linearly to the last
    weight whose opening is not seen yet; above, the readings are interpolated (face mesh
    snaps from closed to a clear opening: between the two the opening is taken as linear)."""
    closed = int(np.flatnonzero(read < VISIBLE)[-1]) if (read < VISIBLE).any() else 0
    jaws, weights = [0.0, OPENING_START], [0.0, float(WEIGHTS[closed])]
    for j in np.arange(OPENING_START + 0.05, 1.0001, 0.05):
        target = float(canonical_opening(np.array([j]))[0])
        w = float(np.interp(target, read[closed:], WEIGHTS[closed:]))
        jaws.append(round(float(j), 3))
        weights.append(round(max(w, weights[-1]), 4))
    return jaws, weights


def calibrate_mouth(assets: AvatarAssets) -> dict[str, list[float]]:
    """The avatar's ``jaw_map`` (see the module docstring), measured on its own renders."""
    plain = AvatarAssets(assets.name, assets.portrait, assets.landmarks,
                         {k: v for k, v in assets.info.items() if k != "jaw_map"})  # fmt: skip
    renderer = WarpRenderer(plain)
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        read = read_openings(renderer, fm)
    jaws, weights = fit_jaw_map(read)
    return {"jaw": jaws, "weight": weights, "read": [round(float(v), 4) for v in read]}


def calibrate_avatar(assets: AvatarAssets) -> AvatarAssets:
    """``assets`` with its measured ``jaw_map``, saved back into its folder."""
    assets.info["jaw_map"] = calibrate_mouth(assets)
    if assets.folder is not None:
        save_info(assets, assets.folder)
    return assets
