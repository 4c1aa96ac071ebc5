"""The causal transformer: streaming == offline, checkpoints describe themselves, ONNX parity."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from torch import Tensor

torch = pytest.importorskip("torch")

from avatar.backends.onnxruntime import OrtBackend  # noqa: E402
from avatar.config import FeatureConfig  # noqa: E402
from avatar.motion.model import STATE_NAMES, MotionDims, MotionTransformer  # noqa: E402
from avatar.motion.runtime import load_torch_backend  # noqa: E402
from avatar.motion.stream import MotionStreamer  # noqa: E402
from tests.conftest import WEIGHTS  # noqa: E402

SMALL = MotionDims(d_model=32, n_heads=2, n_layers=2, d_ff=64, window=12)


def _random_model(dims: MotionDims = SMALL) -> MotionTransformer:
    torch.manual_seed(0)
    model = MotionTransformer(dims)
    with torch.no_grad():
        model.rel_bias.normal_(0, 1)  # zero-initialised in training; make position matter here
    return model.eval()


def _stream(model: MotionTransformer, mel: Tensor, sizes: list[int]) -> Tensor:
    state = model.initial_state(1)
    outs, i = [], 0
    for n in sizes:
        out = model(mel[:, 2 * i : 2 * (i + n)], **state)
        state = dict(zip(STATE_NAMES, out[2:], strict=True))
        outs.append(out[0])
        i += n
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 11, 12, 13, 40])
def test_streaming_equals_offline(chunk: int) -> None:
    model = _random_model()
    tokens = 80  # much longer than the attention window, so the cache wraps
    mel = torch.randn(1, 2 * tokens, SMALL.n_mels)
    with torch.no_grad():
        offline = model(mel, **model.initial_state(1))[0]
        streamed = _stream(
            model, mel, [chunk] * (tokens // chunk) + [tokens % chunk] * bool(tokens % chunk)
        )
    # float32 sums in another order (chunked attention, BLAS blocking): not bit-exact
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)


def test_irregular_chunks_and_window_limit() -> None:
    model = _random_model()
    mel = torch.randn(1, 2 * 60, SMALL.n_mels)
    with torch.no_grad():
        ref = model(mel, **model.initial_state(1))[0]
        got = _stream(model, mel, [1, 7, 2, 13, 1, 1, 20, 15])
        # tokens beyond the receptive field (each layer adds window-1 tokens) cannot matter
        mel2 = mel.clone()
        mel2[:, :20] = torch.randn(1, 20, SMALL.n_mels)
        late = model(mel2, **model.initial_state(1))[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)  # float32 sum order, as above
    reach = SMALL.n_layers * (SMALL.window - 1) + 2 * (SMALL.conv_kernel - 1)
    first_free = 20 // 2 + reach
    torch.testing.assert_close(late[:, first_free:], ref[:, first_free:], atol=1e-5, rtol=1e-4)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _random_model()
    torch.save(model.checkpoint(), tmp_path / "m.pt")
    loaded = MotionTransformer.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=False))
    assert loaded.dims == SMALL
    mel = torch.randn(1, 20, SMALL.n_mels)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(mel, **loaded.initial_state(1))[0], model(mel, **model.initial_state(1))[0]
        )


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    from avatar.motion.export import export_onnx

    model = _random_model()
    path = export_onnx(model, FeatureConfig(), tmp_path / "m.onnx")
    ort = OrtBackend(path)
    assert ort.meta["dims"]["d_model"] == SMALL.d_model
    for tokens in (1, 2, 37):  # the frame axis is dynamic
        mel = torch.randn(1, 2 * tokens, SMALL.n_mels)
        state = model.initial_state(1)
        with torch.no_grad():
            ref = model(mel, **state)
        got = ort.run({"mel": mel.numpy(), **{k: v.numpy() for k, v in state.items()}})
        for name, r in zip(ort.output_names, ref, strict=True):
            # two runtimes' kernels (MLAS vs torch's BLAS, fused Gelu): ~1e-6 typical
            np.testing.assert_allclose(got[name], r.numpy(), atol=1e-4, rtol=1e-3)
    # the batch axis is dynamic too (axis 1 of the caches): three streams of different ages
    mel = torch.randn(3, 4, SMALL.n_mels)
    state = model.initial_state(3)
    state["cache_valid"][1, -5:] = 1.0
    state["cache_valid"][2] = 1.0
    state["k_cache"].normal_()
    with torch.no_grad():
        ref = model(mel, **state)
    got = ort.run({"mel": mel.numpy(), **{k: v.numpy() for k, v in state.items()}})
    for name, r in zip(ort.output_names, ref, strict=True):
        np.testing.assert_allclose(got[name], r.numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not (WEIGHTS / "motion.onnx").exists(), reason="no committed weights yet")
def test_committed_weights_agree_between_torch_and_onnx() -> None:
    ort = OrtBackend(WEIGHTS / "motion.onnx")
    pt = load_torch_backend(WEIGHTS / "motion.pt")
    audio = np.random.default_rng(3).standard_normal(16000 * 3).astype(np.float32) * 0.05
    outs = []
    for backend in (ort, pt):
        s = MotionStreamer(backend, 25)
        frames = [f for k in range(0, len(audio), 640) for f in s.push(audio[k : k + 640])]
        frames += s.flush()
        outs.append(np.stack([np.concatenate([f.blendshapes, f.visemes]) for f in frames]))
    assert outs[0].shape == (75, 31)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)  # two runtimes' float32 kernels


def test_training_path_equals_streaming_forward() -> None:
    model = _random_model()
    mel = torch.randn(2, 2 * 30, SMALL.n_mels)
    with torch.no_grad():
        bs, logits = model.training_outputs(mel)
        ref = model(mel, **model.initial_state(2))
    # one masked pass vs the streaming forward: same maths, other float32 sum order
    torch.testing.assert_close(bs, ref[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits.softmax(-1), ref[1], atol=1e-5, rtol=1e-4)
