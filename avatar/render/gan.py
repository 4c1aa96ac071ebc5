"""Renderer 2: "warp, then refine". The warp renderer draws the frame; the per-person GAN redraws
its mouth region as the person's own mouth.

Per frame: blendshapes -> rig basis weights -> the warp render without head pose
(:class:`~avatar.render.warp.WarpRenderer`, eyes and blinks included) -> its mouth crop, the
rig's lip sketch and the weights -> the generator (any
:class:`~avatar.backends.protocol.InferenceBackend`: TensorRT, onnxruntime CUDA/CPU, torch) ->
what the generator changed is pasted back with a feathered edge (the warp render keeps its full
resolution wherever the generator left it alone) -> head pose.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.errors import ModelError
from avatar.face import sketch
from avatar.face.store import AvatarAssets
from avatar.frames import MotionFrame
from avatar.render.warp import WarpRenderer


class GanRenderer:
    name = "gan"

    def __init__(
        self, assets: AvatarAssets, backend: InferenceBackend, size: int | None = None
    ) -> None:
        if tuple(backend.input_names) != sketch.INPUT_NAMES:
            raise ModelError(
                f"avatar {assets.name!r}: its GAN takes {list(backend.input_names)}, this "
                f"version {list(sketch.INPUT_NAMES)}; retrain it with "
                "`avatar train renderer VIDEO -o FOLDER`"
            )
        self.backend = backend
        self.warp = WarpRenderer(assets, size)
        self.size = self.warp.size
        self.crop = int(backend.meta["dims"]["size"])
        self.code = int(backend.meta["dims"]["code"])  # the rig bases it was trained on (first)
        self.box = sketch.mouth_box(self.warp.rig.rest)
        self._paste_setup()

    def _paste_setup(self) -> None:
        x0, y0, side = self.box
        self.paste_box = (
            max(int(np.floor(x0)), 0),
            max(int(np.floor(y0)), 0),
            min(int(np.ceil(x0 + side)), self.size),
            min(int(np.ceil(y0 + side)), self.size),
        )
        m = cv2.invertAffineTransform(sketch.crop_matrix(self.box, self.crop))
        m[:, 2] -= self.paste_box[:2]
        self._paste_matrix = m
        bx0, by0, bx1, by1 = self.paste_box
        mask = cv2.warpAffine(sketch.paste_mask(self.crop), m, (bx1 - bx0, by1 - by0))
        self._paste_alpha = mask[..., None]

    def refine(self, weights: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Generator inputs for the warp render ``image`` at basis ``weights``, run; returns the
        change to the mouth crop, (S, S, 3) float32 in pixel units (0-255 scale)."""
        warped = sketch.to_unit(sketch.crop(image, self.box, self.crop))
        inputs = {
            "warped": warped[None],
            "sketch": sketch.rig_sketch(self.warp.rig, weights, self.box, self.crop)[None],
            "code": weights[None, : self.code].astype(np.float32),
        }
        mouth = self.backend.run(inputs)["mouth"][0]
        return ((mouth - warped) * 127.5).transpose(1, 2, 0)

    def render(self, motion: MotionFrame) -> np.ndarray:
        weights = self.warp.rig.weights(motion)
        image = self.warp.warp_face(weights)  # no pose: the generator learnt upright crops
        self.paste(image, self.refine(weights, image))
        return self.warp.apply_pose(image, motion.head_pose)

    def paste(self, image: np.ndarray, change: np.ndarray) -> None:
        """Add the generator's ``change`` (S, S, 3) to the mouth box, feathered at its edge."""
        bx0, by0, bx1, by1 = self.paste_box
        patch = cv2.warpAffine(change, self._paste_matrix, (bx1 - bx0, by1 - by0),
                               flags=cv2.INTER_LINEAR)  # fmt: skip
        region = image[by0:by1, bx0:bx1].astype(np.float32)
        out = region + patch * self._paste_alpha + 0.5
        image[by0:by1, bx0:bx1] = np.clip(out, 0, 255).astype(np.uint8)
