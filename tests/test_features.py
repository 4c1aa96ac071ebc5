"""Causal log-mel: streaming equals offline, and the past never depends on the future."""

from __future__ import annotations

import numpy as np

from avatar.audio.features import LogMel, log_mel
from avatar.config import FeatureConfig

CFG = FeatureConfig()


def test_streaming_equals_offline_for_any_block_size() -> None:
    x = np.random.default_rng(1).standard_normal(16000 * 2).astype(np.float32) * 0.1
    ref = log_mel(x, CFG)
    assert ref.shape == (len(x) // CFG.hop, CFG.n_mels)
    for block in (1, 97, 160, 333, 4000):
        m = LogMel(CFG)
        got = np.concatenate([m.push(x[k : k + block]) for k in range(0, len(x), block)])
        # FFT of each frame in other batch shapes (pocketfft/SIMD): float32 rounding only
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_features_are_causal() -> None:
    x = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    y = x.copy()
    y[4000:] = 0.0  # change the future only
    a, b = log_mel(x, CFG), log_mel(y, CFG)
    n_past = 4000 // CFG.hop  # frames that end at or before sample 4000
    np.testing.assert_array_equal(a[:n_past], b[:n_past])
    assert not np.allclose(a[n_past:], b[n_past:])


def test_silence_hits_the_fixed_floor() -> None:
    feats = log_mel(np.zeros(1600, np.float32), CFG)
    # float32 log10 is vectorised: numpy's AVX-512 path gives -5.0000005 for 1e-5 where AVX2
    # gives -5.0, so allow a few float32 ulps (~5e-7 each at 5.0).
    np.testing.assert_allclose(feats, np.log10(CFG.log_floor), rtol=0, atol=4e-6)
