"""Export the mouth generator to ONNX (dynamic batch) with its description as metadata."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from avatar.backends.protocol import META_KEY
from avatar.gan.generator import GENERATOR_KIND, INPUT_NAMES, OUTPUT_NAMES, MouthGenerator


def generator_meta(model: MouthGenerator) -> dict[str, Any]:
    return {"kind": GENERATOR_KIND, "dims": asdict(model.dims)}


def export_generator(model: MouthGenerator, path: Path) -> Path:
    import onnx

    model = model.eval()
    s, c = model.dims.size, model.dims.code
    args = (torch.zeros(1, 3, s, s), torch.zeros(1, 3, s, s), torch.zeros(1, c))  # INPUT_NAMES
    batch = torch.export.Dim("batch", min=1, max=256)
    dynamic = {name: {0: batch} for name in INPUT_NAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, args, dynamo=True, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, opset_version=20,
            verbose=False,
        )  # fmt: skip
    assert program is not None
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(generator_meta(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path
