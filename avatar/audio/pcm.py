"""Sample formats: float32 in [-1, 1] <-> signed 16-bit PCM, and decoded WebRTC audio -> mono."""

from __future__ import annotations

import av
import numpy as np

PCM16_MAX = 32767  # float 1.0 -> +32767; -1.0 -> -32767 (symmetric, as WebRTC stacks do)
PCM16_SCALE = 32768.0  # int16 -> float: x / 32768 keeps every value inside [-1, 1)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (out-of-range values saturate, NaN becomes 0)."""
    y = np.clip(np.asarray(x, np.float32) * np.float32(PCM16_MAX), -PCM16_MAX, PCM16_MAX)
    y[np.isnan(y)] = 0.0  # inf was clipped; NaN would cast to an arbitrary value
    return y.astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1)."""
    return (np.asarray(pcm).astype(np.float32) / np.float32(PCM16_SCALE)).astype(np.float32)


def to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame (s16 or float, packed or planar, any channels) -> mono float32."""
    pcm = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        x = pcm.astype(np.float32)
        x = x.mean(axis=0) if x.ndim == 2 else x
    else:
        x = pcm.reshape(-1, channels).astype(np.float32).mean(axis=1)
    scale = PCM16_SCALE if frame.format.name.startswith("s16") else 1.0
    return (x / scale).astype(np.float32)
