"""Export the audio-to-motion transformer to ONNX with its streaming state as inputs/outputs.

Inputs: ``mel`` (B, frames, n_mels) with a dynamic frame count (a multiple of
``frames_per_token``) and the state tensors of :data:`avatar.motion.model.STATE_NAMES`; outputs:
``blendshapes``, ``visemes`` and ``<state>_out`` for each state tensor. The batch ``B`` (independent
streams, each with its own state and age) is dynamic on every input and output: axis 0, except the
attention caches' axis 1 (:data:`avatar.motion.channels.BATCH_AXES`). The model's description
(dims, feature config, batch-1 state shapes, channel names) travels inside the file as metadata.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from avatar.backends.protocol import META_KEY
from avatar.config import FeatureConfig
from avatar.motion.channels import BATCH_AXES, BLENDSHAPES, VISEMES
from avatar.motion.model import OUTPUT_NAMES, STATE_NAMES, MotionTransformer


def model_meta(model: MotionTransformer, features: FeatureConfig) -> dict[str, Any]:
    """Everything a runtime needs to drive the model, as JSON-able data."""
    from dataclasses import asdict

    state = model.initial_state(1)
    return {
        "kind": "motion",
        "dims": asdict(model.dims),
        "features": features.model_dump(),
        "state_shapes": {k: list(v.shape) for k, v in state.items()},
        "blendshapes": list(BLENDSHAPES),
        "visemes": list(VISEMES),
    }


def export_onnx(model: MotionTransformer, features: FeatureConfig, path: Path) -> Path:
    """Write ``model`` to ``path`` as ONNX (opset 20, dynamo exporter) with metadata.

    Opset 20 has a native ``Gelu``: onnxruntime runs the streaming step ~1.8x faster than with
    opset 18's Erf decomposition (measured, one thread). The example inputs have a batch of 2:
    ``torch.export`` specializes a dimension whose example size is 1 to a constant.
    """
    import onnx

    model = model.eval()
    state = model.initial_state(2)
    mel = torch.zeros(2, 2 * model.dims.frames_per_token, model.dims.n_mels)
    frames = torch.export.Dim("frames", min=model.dims.frames_per_token, max=1 << 20)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic: dict[str, Any] = {
        "mel": {0: batch, 1: frames},
        **{k: {BATCH_AXES.get(k, 0): batch} for k in STATE_NAMES},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (mel, *state.values()),
            dynamo=True,
            input_names=["mel", *STATE_NAMES],
            output_names=[*OUTPUT_NAMES, *(f"{n}_out" for n in STATE_NAMES)],
            dynamic_shapes=dynamic,
            opset_version=20,
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(model_meta(model, features))
    onnx.save_model(proto, str(path))
    return path
