"""The whole training pipeline in quick mode: corpus -> train -> checkpoint + ONNX -> eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")


@pytest.mark.slow
def test_quick_training_produces_a_working_model(tmp_path: Path) -> None:
    try:
        from avatar.data.espeak import EspeakSynth

        EspeakSynth()
    except Exception as e:
        pytest.skip(f"espeak-ng unavailable: {e}")
    from avatar.backends.onnxruntime import OrtBackend
    from avatar.config import load_config
    from avatar.motion.runtime import load_torch_backend
    from avatar.motion.stream import MotionStreamer
    from avatar.train.options import TrainOptions
    from avatar.train.pipeline import train_motion_pipeline

    opts = TrainOptions(corpus=tmp_path / "corpus", out=tmp_path / "run", quick=True, processes=1)
    metrics = train_motion_pipeline(opts, load_config())
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert manifest["hours_total"] > 0.005
    assert set(manifest["hours_per_family"]) == {"espeak-en", "espeak-heldout"}
    for name in ("motion.pt", "motion.onnx", "metrics.json", "train_log.jsonl"):
        assert (opts.out / name).stat().st_size > 0
    sets = metrics["sets"]
    assert isinstance(sets, dict) and {"espeak-heldout", "espeak-heldout-opus"} <= set(sets)
    # the exported model runs and agrees with the checkpoint
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    rows = []
    for backend in (
        OrtBackend(opts.out / "motion.onnx"),
        load_torch_backend(opts.out / "motion.pt"),
    ):
        s = MotionStreamer(backend, 25)
        frames = s.push(audio) + s.flush()
        rows.append(np.stack([f.blendshapes for f in frames]))
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-4)  # two runtimes' float32 kernels


def test_lookahead_is_a_bounded_setting(tmp_path: Path) -> None:
    from avatar.errors import ConfigError
    from avatar.train.options import MAX_LOOKAHEAD_MS, TrainOptions
    from avatar.train.pipeline import train_settings

    opts = TrainOptions(corpus=tmp_path, out=tmp_path, lookahead_ms=40)
    assert train_settings(opts).dims.lookahead_tokens == 2
    for bad in (MAX_LOOKAHEAD_MS + 20, 30, -20):
        with pytest.raises(ConfigError, match="lookahead"):
            train_settings(TrainOptions(corpus=tmp_path, out=tmp_path, lookahead_ms=bad))
