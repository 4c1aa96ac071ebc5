"""Noise generators for augmentation: coloured, babble, mains hum and keyboard clicks.

Every generator returns unit-RMS float64 noise; :func:`add_noise` mixes one into an utterance at
a given SNR below its active speech.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from scipy import signal

from avatar.data.audio_ops import speech_power, unit_rms, with_audio
from avatar.data.types import AlignedUtterance

NOISE_WEIGHTS: dict[str, float] = {
    "white": 0.15,
    "pink": 0.25,
    "brown": 0.1,
    "babble": 0.25,
    "hum": 0.1,
    "keyboard": 0.15,
}


def colored_noise(rng: np.random.Generator, n: int, exponent: float, sr: int) -> np.ndarray:
    """Unit-RMS noise with power spectrum ``1 / f**exponent`` (0 white, 1 pink, 2 brown)."""
    n_fft = scipy.fft.next_fast_len(n, real=True)
    spec = scipy.fft.rfft(rng.standard_normal(n_fft))
    f = np.maximum(scipy.fft.rfftfreq(n_fft, 1.0 / sr), 20.0)
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0.0
    return unit_rms(scipy.fft.irfft(spec, n_fft)[:n])


def _resonator(f: float, bw: float, sr: int) -> tuple[list[float], list[float]]:
    r = math.exp(-math.pi * bw / sr)
    return [1.0 - r], [1.0, -2.0 * r * math.cos(2.0 * math.pi * f / sr), r * r]


def _pseudo_talker(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Speech-like noise: syllables of 100-300 ms, mostly voiced (a pulse train at a drifting
    f0 through two random formants), some hiss, with pauses between them."""
    t = np.arange(n) / sr
    f0 = rng.uniform(90.0, 240.0) * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t))
    pulses = np.diff(np.floor(np.cumsum(f0 / sr)), prepend=0.0)
    voiced = signal.lfilter([1.0], [1.0, -0.95], pulses)  # ~ -6 dB/octave source
    hiss = 0.3 * rng.standard_normal(n)
    y = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.3) * sr)
    while pos < n:
        seg = slice(pos, min(n, pos + int(rng.uniform(0.1, 0.3) * sr)))
        exc = voiced[seg] if rng.random() < 0.8 else hiss[seg]
        b1, a1 = _resonator(rng.uniform(300.0, 850.0), 90.0, sr)
        b2, a2 = _resonator(rng.uniform(900.0, 2500.0), 140.0, sr)
        out = signal.lfilter(b1, a1, exc) + 0.5 * signal.lfilter(b2, a2, exc)
        y[seg] = out * np.hanning(len(out))
        pos = seg.stop + int(rng.exponential(0.08) * sr)
    return unit_rms(y)


def _babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    talkers = [
        rng.uniform(0.5, 1.0) * _pseudo_talker(rng, n, sr) for _ in range(rng.integers(3, 8))
    ]
    return unit_rms(np.sum(talkers, axis=0))


def _hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz (+-0.5%) with random harmonics falling off."""
    f = float(rng.choice([50.0, 60.0])) * (1.0 + rng.uniform(-0.005, 0.005))
    t = np.arange(n) / sr
    roll = rng.uniform(0.5, 2.0)
    y = np.zeros(n)
    for k in range(1, 11):
        if k * f < sr / 2:
            y += (
                rng.uniform(0.2, 1.0)
                * k**-roll
                * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3))
            )
    return unit_rms(y)


def _keyboard(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Key clicks: Poisson times (3-10/s), each a decaying noise burst plus a small thump."""
    length = int(0.02 * sr)
    tt = np.arange(length) / sr
    y = np.zeros(n + length)
    count = max(1, rng.poisson(rng.uniform(3.0, 10.0) * n / sr))
    for t0 in rng.integers(0, max(n, 1), count):
        tau = rng.uniform(0.001, 0.004)
        burst = rng.standard_normal(length) * np.exp(-tt / tau)
        thump = (
            rng.uniform(0, 1)
            * np.sin(2 * np.pi * rng.uniform(100, 400) * tt)
            * np.exp(-tt / (2 * tau))
        )
        y[t0 : t0 + length] += rng.lognormal(0.0, 0.5) * (burst + thump)
    return unit_rms(y[:n])


def make_noise(kind: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS noise of one of :data:`NOISE_WEIGHTS`' kinds."""
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if kind in exponents:
        return colored_noise(rng, n, exponents[kind], sr)
    makers = {"babble": _babble, "hum": _hum, "keyboard": _keyboard}
    if kind not in makers:
        raise ValueError(f"unknown noise kind {kind!r}; use one of {sorted(NOISE_WEIGHTS)}")
    return makers[kind](rng, n, sr)


def add_noise(
    utt: AlignedUtterance, rng: np.random.Generator, kind: str, snr_db: float
) -> AlignedUtterance:
    """Add noise at ``snr_db`` below the active speech power (the noise's mean power over the
    whole utterance; speech power over the non-silent phones)."""
    noise = make_noise(kind, rng, len(utt.audio), utt.sample_rate)
    level = math.sqrt(max(speech_power(utt), 1e-10) * 10.0 ** (-snr_db / 10.0))
    tag = f"{utt.meta.get('aug_noise', '')}+{kind}".strip("+")
    return with_audio(utt, utt.audio + level * noise, noise=tag, snr_db=snr_db)
