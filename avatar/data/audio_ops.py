"""Small helpers shared by the augmentations, the noise generators and the codec round trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import signal

from avatar.data.types import AlignedUtterance, Phone


def with_audio(
    utt: AlignedUtterance,
    audio: np.ndarray,
    phones: list[Phone] | None = None,
    sample_rate: int | None = None,
    **meta: float | str,
) -> AlignedUtterance:
    """A new utterance with float32 audio, the given phones and ``aug_*`` meta entries added."""
    new_meta = dict(utt.meta)
    new_meta.update({f"aug_{k}": v for k, v in meta.items()})
    return dataclasses.replace(
        utt,
        audio=np.ascontiguousarray(audio, dtype=np.float32),
        sample_rate=sample_rate or utt.sample_rate,
        phones=utt.phones if phones is None else phones,
        meta=new_meta,
    )


def speech_power(utt: AlignedUtterance) -> float:
    """Mean power over the non-silent phones (the whole signal if there are none)."""
    x = utt.audio.astype(np.float64)
    mask = np.zeros(len(x), dtype=bool)
    for p in utt.phones:
        if p.ipa:
            mask[round(p.start * utt.sample_rate) : round(p.end * utt.sample_rate)] = True
    sel = x[mask] if mask.any() else x
    return float(np.mean(sel**2)) if len(sel) else 0.0


def unit_rms(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to unit RMS (an all-zero ``x`` stays zero)."""
    return x / math.sqrt(float(np.mean(x**2)) + 1e-20)


def finalize(audio: np.ndarray) -> np.ndarray:
    """Float32, finite, within ``[-1, 1]``."""
    return np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0).astype(
        np.float32
    )


def resample_audio(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling (sample ``i`` out is time ``i / rate_out``)."""
    if rate_in == rate_out:
        return x
    g = math.gcd(rate_in, rate_out)
    return signal.resample_poly(x, rate_out // g, rate_in // g)
