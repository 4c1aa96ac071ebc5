"""INT8 versions of the ONNX models, for onnxruntime's CPU provider.

A model ``NAME.onnx`` gets an INT8 sibling ``NAME.int8.onnx``, selected by a ``precision``
config field (``motion.precision``, ``render.precision``). Inputs and outputs stay float32, so
the same :class:`~avatar.backends.onnxruntime.OrtBackend` and model wrappers run either file;
the ``avatar.meta`` metadata is copied over.

Two recipes (``scripts/quantize_models.py`` measures both against float32 on real speech):

- **dynamic**: weights of ``MatMul``/``Gemm`` to INT8, activations quantized per call from their
  observed range. No calibration data; the streaming state and every non-matrix op stay float32.
- **static QDQ**: weights and activations of the chosen ops get fixed scales from calibration
  inputs (what the model is fed on real speech, caught by :class:`RecordingBackend`), as
  QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into INT8 kernels.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from avatar.backends.protocol import META_KEY, InferenceBackend

Precision = Literal["fp32", "int8"]
INT8_SUFFIX = ".int8.onnx"


def int8_measured_here() -> bool:
    """Whether this CPU runs INT8 matrix products the way the shipped files were measured
    (x86 with VNNI: one instruction per u8 x s8 dot product, no 16-bit intermediate). Elsewhere
    the files are still exact (7-bit weights) but their speed was never measured, so ``auto``
    precision keeps float32 there."""
    features = _cpu_features()
    return bool(features.get("AVX512VNNI") or features.get("AVXVNNI"))


def _cpu_features() -> dict[str, bool]:
    """numpy's reading of this CPU's features (its module moved in numpy 2)."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        with contextlib.suppress(ImportError, AttributeError):
            return dict(importlib.import_module(module).__cpu_features__)
    return {}


def precision_path(onnx_path: Path, precision: Precision) -> Path:
    """The file of ``precision`` for a float32 ``NAME.onnx``: itself, or ``NAME.int8.onnx``."""
    if precision == "fp32":
        return onnx_path
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + INT8_SUFFIX)


class RecordingBackend:
    """An :class:`InferenceBackend` that runs another and keeps copies of its inputs (every
    ``every``-th call, at most ``limit``): the calibration data of static quantization, caught
    where the engine's own wrappers feed the model."""

    def __init__(self, inner: InferenceBackend, every: int = 1, limit: int = 10_000) -> None:
        self.inner = inner
        self.name = inner.name
        self.input_names = inner.input_names
        self.output_names = inner.output_names
        self.meta = inner.meta
        self.every, self.limit = every, limit
        self.calls = 0
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.calls % self.every == 0 and len(self.feeds) < self.limit:
            self.feeds.append({n: np.array(inputs[n], np.float32) for n in self.input_names})
        self.calls += 1
        return self.inner.run(inputs)


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize one model (see the module docstring)."""

    method: Literal["dynamic", "static"] = "static"
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
    per_channel: bool = True
    exclude_nodes: tuple[str, ...] = ()  # node names left float32
    preprocess: bool = True  # onnxruntime's quant_pre_process (shape inference + optimization)
    calibrate: Literal["minmax", "percentile", "entropy"] = "minmax"
    # uint8 (asymmetric) activations: the x86 kernels' native pairing (u8 activations, s8 weights)
    activations: Literal["int8", "uint8"] = "uint8"
    qoperator: bool = False  # QLinearConv/QLinearMatMul ops instead of QDQ pairs
    # 7-bit weights: x86 without VNNI multiplies u8 x s8 pairs into saturating 16-bit sums
    # (255 * 127 * 2 overflows; 255 * 63 * 2 does not), so the same file is exact on every CPU
    reduce_range: bool = True


# the motion transformer: its matrices' weights to INT8, activations quantized per call. Static
# scales (QDQ, every variant tried) were no faster and further from float32 on this small model.
MOTION_RECIPE = QuantRecipe(method="dynamic", op_types=("MatMul",), preprocess=False)
# the GAN generator's convolutions and linear layers, scales calibrated on its real inputs
GAN_RECIPE = QuantRecipe(method="static", op_types=("Conv", "Gemm"))


def quantize_onnx(
    src: Path, dst: Path, recipe: QuantRecipe, feeds: Sequence[dict[str, np.ndarray]] = ()
) -> Path:
    """Write the INT8 version of ``src`` to ``dst`` (static recipes need calibration ``feeds``),
    with ``src``'s ``avatar.meta``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        model = _preprocessed(src, Path(tmp)) if recipe.preprocess else src
        common: dict[str, Any] = {
            "op_types_to_quantize": list(recipe.op_types),
            "per_channel": recipe.per_channel,
            "nodes_to_exclude": list(recipe.exclude_nodes),
            "weight_type": QuantType.QInt8,
            "reduce_range": recipe.reduce_range,
        }
        if recipe.method == "dynamic":
            quantize_dynamic(model, dst, **common)
        else:
            if not feeds:
                raise ValueError("static quantization needs calibration inputs")
            quantize_static(model, dst, _FeedReader(feeds), **_static_options(recipe), **common)
    copy_metadata(src, dst)
    return dst


def _static_options(recipe: QuantRecipe) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType

    signed = recipe.activations == "int8"
    return {
        "activation_type": QuantType.QInt8 if signed else QuantType.QUInt8,
        "calibrate_method": _calibration(recipe.calibrate),
        "quant_format": QuantFormat.QOperator if recipe.qoperator else QuantFormat.QDQ,
        "extra_options": {"ActivationSymmetric": signed},
    }


def _preprocessed(src: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "pre.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def _calibration(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}  # fmt: skip
    return methods[name]


def copy_metadata(src: Path, dst: Path) -> None:
    """Give ``dst`` the ``avatar.meta`` of ``src`` (OrtBackend needs it), noting the precision."""
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    raw = next(p.value for p in source.metadata_props if p.key == META_KEY)
    meta = {**json.loads(raw), "precision": "int8"}
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(model, str(dst))


class _FeedReader:
    """onnxruntime's ``CalibrationDataReader``: one recorded feed after another."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
