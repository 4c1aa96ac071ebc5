"""Causal log-mel features, identical in streaming and offline use.

Frame ``j`` ends at sample ``(j + 1) * hop`` and looks at the ``n_fft`` samples before that end
(zeros before the first sample): it never sees the future. Normalisation is fixed (a log floor
here, a per-bin affine learned from the training corpus inside the model), so nothing depends on
statistics over audio that has not arrived yet.
"""

from __future__ import annotations

import numpy as np

from avatar.config import FeatureConfig


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Triangular HTK-mel filters, (n_mels, n_fft // 2 + 1), area-normalised (Slaney style)."""
    n_bins = cfg.n_fft // 2 + 1
    freqs = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    fb = np.zeros((cfg.n_mels, n_bins), dtype=np.float64)
    for m in range(cfg.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


class LogMel:
    """Streaming causal log-mel extractor with a ring buffer of past samples.

    ``push(samples)`` returns the features of every frame that became complete, shape
    ``(n_frames, n_mels)``; :func:`log_mel` is the offline form of the same computation.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        if cfg.n_fft < cfg.hop:
            raise ValueError("n_fft must be at least hop")
        self.cfg = cfg
        self._window = np.hanning(cfg.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
        self._fb = mel_filterbank(cfg)
        self._history = np.zeros(cfg.n_fft - cfg.hop, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.frames_out = 0

    def reset(self) -> None:
        self._history[:] = 0.0
        self._pending = np.zeros(0, np.float32)
        self.frames_out = 0

    @property
    def samples_in(self) -> int:
        """Samples consumed so far (complete frames plus the pending remainder)."""
        return self.frames_out * self.cfg.hop + len(self._pending)

    def push(self, samples: np.ndarray) -> np.ndarray:
        hop = self.cfg.hop
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = len(buf) // hop
        if n == 0:
            self._pending = buf
            return np.zeros((0, self.cfg.n_mels), np.float32)
        used = buf[: n * hop]
        self._pending = buf[n * hop :]
        full = np.concatenate([self._history, used])
        keep = self.cfg.n_fft - hop
        self._history = full[len(full) - keep :].copy()
        self.frames_out += n
        return self._frames(full, n)

    def _frames(self, full: np.ndarray, n: int) -> np.ndarray:
        cfg = self.cfg
        idx = np.arange(cfg.n_fft)[None, :] + cfg.hop * np.arange(n)[:, None]
        frames = full[idx] * self._window  # (n, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)).astype(np.float32) ** 2
        mel = power @ self._fb.T  # (n, n_mels)
        return np.log10(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def log_mel(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Offline features of a whole signal: ``len(samples) // hop`` frames, (n_frames, n_mels)."""
    return LogMel(cfg).push(samples)
