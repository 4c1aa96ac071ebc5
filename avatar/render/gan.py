"""Renderer 2: the per-person GAN generates the mouth region; the rest is the portrait.

Per frame: blendshapes -> rig basis weights -> lip sketch (:mod:`avatar.gan.sketch`) and the
nearest training crop (:mod:`avatar.gan.bank`) -> the generator (any
:class:`~avatar.backends.protocol.InferenceBackend`: TensorRT, onnxruntime CUDA/CPU,
torch) -> the crop pasted into the portrait with a feathered edge. Blinks and head pose come
from the warp renderer's rig, so both renderers move the head and eyes the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.errors import AvatarNotFound
from avatar.face.rig import BASIS_INDEX, basis_weights
from avatar.face.store import AvatarAssets
from avatar.frames import MotionFrame
from avatar.gan import sketch
from avatar.gan.bank import MouthBank
from avatar.render.warp import WarpRenderer


class GanRenderer:
    name = "gan"

    def __init__(
        self, assets: AvatarAssets, backend: InferenceBackend, size: int | None = None
    ) -> None:
        self.backend = backend
        self.warp = WarpRenderer(assets, size)
        self.size = self.warp.size
        self.crop = int(backend.meta["dims"]["size"])
        rig = self.warp.rig
        self.box = sketch.mouth_box(rig.rest)
        self.reference = sketch.to_unit(sketch.crop(self.warp.portrait, self.box, self.crop))[None]
        bank_path = assets.file("gan_bank.npz")
        if bank_path is None:
            raise AvatarNotFound(f"avatar {assets.name!r} has a generator but no gan_bank.npz")
        self.bank = MouthBank.load(bank_path)
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

    def generate(self, weights: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The generator's mouth crop (S, S, 3) uint8 for rig basis weights, painted into
        ``base`` (the frame being rendered, whose surroundings of the mouth it matches)."""
        lm = self.warp.rig.landmarks(weights)
        sk = sketch.lip_sketch(lm, self.box, self.crop)
        around = sketch.to_unit(sketch.crop(base, self.box, self.crop))
        inputs = {
            "reference": self.reference,
            "retrieved": self.bank.crops[self.bank.nearest(weights)][None],
            "context": sketch.context(around, sk)[None],
            "sketch": sk[None],
            "code": weights[None].astype(np.float32),
        }
        return sketch.from_unit(self.backend.run(inputs)["mouth"][0])

    def render(self, motion: MotionFrame) -> np.ndarray:
        weights = basis_weights(motion.blendshapes, motion.blink)
        if motion.blink > 0.01:  # eyes from the rig, mouth from the generator
            eyes_only = np.zeros_like(weights)
            eyes_only[BASIS_INDEX["blink"]] = weights[BASIS_INDEX["blink"]]
            image = self.warp.warp_face(eyes_only)
        else:
            image = self.warp.portrait.copy()
        self.paste(image, self.generate(weights, image))
        return self.warp.apply_pose(image, motion.head_pose)

    def paste(self, image: np.ndarray, mouth: np.ndarray) -> None:
        bx0, by0, bx1, by1 = self.paste_box
        patch = cv2.warpAffine(mouth, self._paste_matrix, (bx1 - bx0, by1 - by0),
                               flags=cv2.INTER_LINEAR)  # fmt: skip
        region = image[by0:by1, bx0:bx1].astype(np.float32)
        a = self._paste_alpha
        image[by0:by1, bx0:bx1] = (region * (1 - a) + patch * a + 0.5).astype(np.uint8)
