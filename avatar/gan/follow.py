"""Does the trained GAN renderer follow the motion? A jaw sweep read back from its pixels.

``jawOpen`` goes from 0 to 1; the warp renderer and the GAN renderer (the real
:class:`~avatar.render.gan.GanRenderer`, at render-time inputs, on a torch backend) draw each
frame; face mesh reads the inner-lip gap off both (inter-ocular units). A generator that copies
the clip's habitual mouths instead of the warp's geometry shows up as a flat or bimodal curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avatar.backends.torch import TorchBackend
from avatar.face import mesh
from avatar.face.rig import basis_weights
from avatar.face.sketch import GENERATOR_KIND, INPUT_NAMES, OUTPUT_NAMES
from avatar.face.store import AvatarAssets
from avatar.frames import MotionFrame
from avatar.gan.generator import MouthGenerator
from avatar.motion.channels import BLENDSHAPE_INDEX, BLENDSHAPES, VISEMES
from avatar.render.gan import GanRenderer


def torch_renderer(assets: AvatarAssets, model: MouthGenerator, size: int) -> GanRenderer:
    """The GAN renderer on an in-memory generator (what the saved avatar will render)."""
    meta = {"kind": GENERATOR_KIND, "dims": {"size": model.dims.size, "code": model.dims.code}}
    return GanRenderer(assets, TorchBackend(model.eval(), INPUT_NAMES, OUTPUT_NAMES, meta), size)


def _gap(fm: mesh.FaceMesh, image: np.ndarray, d: float) -> float:
    faces = fm.detect(image)
    return round(mesh.inner_lip_gap(faces[0]) / d, 3) if faces else float("nan")


def jaw_sweep(renderer: GanRenderer, steps: int = 11) -> dict[str, Any]:
    """Inner-lip gap of warp and GAN frames over ``jawOpen`` 0..1, and each one's correlation
    with ``jawOpen`` (NaN where face mesh lost the face)."""
    jaws = np.linspace(0.0, 1.0, steps)
    d = mesh.interocular(renderer.warp.rig.rest)
    warp, gan = [], []
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        for j in jaws:
            bs = np.zeros(len(BLENDSHAPES), np.float32)
            bs[BLENDSHAPE_INDEX["jawOpen"]] = j
            warp.append(_gap(fm, renderer.warp.warp_face(basis_weights(bs)), d))
            motion = MotionFrame(0, 0, bs, np.zeros(len(VISEMES), np.float32))
            gan.append(_gap(fm, renderer.render(motion), d))
    return {
        "jaw_open": [round(float(j), 2) for j in jaws],
        "warp_gap": warp,
        "gan_gap": gan,
        "corr_warp": round(float(np.corrcoef(jaws, warp)[0, 1]), 3),
        "corr_gan": round(float(np.corrcoef(jaws, gan)[0, 1]), 3),
    }
