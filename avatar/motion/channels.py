"""Output channels of the motion model: ARKit blendshapes and Oculus visemes."""

from __future__ import annotations

# ARKit blendshape names (the names three.js/VRM, Audio2Face and MediaPipe users speak).
BLENDSHAPES: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "mouthRollLower",
    "mouthRollUpper",
)

# The 15 Oculus/Meta lipsync visemes.
VISEMES: tuple[str, ...] = (
    "sil",
    "PP",
    "FF",
    "TH",
    "DD",
    "kk",
    "CH",
    "SS",
    "nn",
    "RR",
    "aa",
    "E",
    "ih",
    "oh",
    "ou",
)

# Tensor names of the motion network (torch, ONNX and TensorRT share them).
STATE_NAMES: tuple[str, ...] = ("conv1_state", "conv2_state", "k_cache", "v_cache", "cache_valid")
OUTPUT_NAMES: tuple[str, ...] = ("blendshapes", "visemes")
# Where the batch (stream) axis is, for tensors where it is not axis 0: the attention caches are
# (n_layers, B, n_heads, past, d_head); state outputs ``<name>_out`` share their input's axis.
BATCH_AXES: dict[str, int] = {"k_cache": 1, "v_cache": 1, "k_cache_out": 1, "v_cache_out": 1}

BLENDSHAPE_INDEX = {n: i for i, n in enumerate(BLENDSHAPES)}
VISEME_INDEX = {n: i for i, n in enumerate(VISEMES)}


def output_channels() -> list[str]:
    """Channel names of a motion.json row: blendshapes then ``viseme_<name>``."""
    return [*BLENDSHAPES, *(f"viseme_{v}" for v in VISEMES)]
