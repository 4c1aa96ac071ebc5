"""Distillation: a smaller generator learns from a trained one (the teacher) as well as the video.

The frozen teacher labels inputs once, before training: the clip's training frames as training
feeds them (real surroundings, warp render in the painted region), the same frames as rendering
feeds them (the warp render alone), and warp renders at the motion of real speech (the bundled
``sample.ogg``'s first seconds through the engine, given by the caller: the composition root's
:func:`avatar.compose.offline.speech_blendshapes`; its later seconds are left for judging the
student). The student's L1 to those outputs is added to the usual losses; the frames of
speech and the warp-only inputs are ones the video alone has no target for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from avatar.errors import ModelError
from avatar.gan.generator import MouthGenerator


@dataclass(slots=True)
class TeacherLabels:
    """The teacher's outputs on the training inputs and on extra inputs it alone can label."""

    on_train: torch.Tensor  # (N, 3, S, S) on every clip frame's training input
    inputs: torch.Tensor  # (M, 3, S, S) extra inputs: warp renders of frames and of speech
    sketch: torch.Tensor  # (M, 3, S, S)
    code: torch.Tensor  # (M, n_code)
    out: torch.Tensor  # (M, 3, S, S) the teacher's outputs on them
    weight: torch.Tensor  # (M, 1, S, S) L1 weight, high in the painted region


def load_teacher(path: Path, size: int, code: int) -> MouthGenerator:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    teacher = MouthGenerator.from_checkpoint(ckpt).requires_grad_(False)
    if (teacher.dims.size, teacher.dims.code) != (size, code):
        raise ModelError(
            f"{path}: the teacher takes {teacher.dims.size}px crops and {teacher.dims.code} "
            f"codes, this training {size} and {code}; distil from a generator of this avatar"
        )
    return teacher


@torch.no_grad()
def teacher_labels(
    teacher: MouthGenerator,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    mouth_weight: float,
) -> TeacherLabels:
    """Run the teacher on ``train`` (inputs, sketch, code of every clip frame) and ``extra``
    (render-time inputs the student should match the teacher on)."""
    (on_train,) = teacher.eval()(*train)
    inputs, sk, code = extra
    (out,) = teacher(inputs, sk, code)
    weight = torch.where(sk[:, -1:] > 0, mouth_weight, 1.0)
    return TeacherLabels(on_train, inputs, sk, code, out, weight)
