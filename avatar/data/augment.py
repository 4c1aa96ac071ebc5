"""Augmentations that hide the synthesizer's fingerprint and keep the phone alignment exact.

Every transform takes an :class:`AlignedUtterance` and returns a new one; those with random
choices take a ``numpy.random.Generator``. Whatever changes time (speed, stretch, padding, the
codec's delay) moves the phone times with it, and the output's phones cover ``[0, duration]``
without gaps (:func:`check_alignment`). Each transform records what it did in ``meta["aug_*"]``.

Two entry points: :func:`augment` (a random chain, see :class:`AugmentProbabilities`) and
:func:`clean` (16 kHz, a little padding with room tone). Both return float32 16 kHz audio in
``[-1, 1]``.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import itertools
import math
from dataclasses import dataclass

import av
import numpy as np
import scipy.fft
from scipy import signal

from avatar.data.types import AlignedUtterance, Phone

TRAIN_RATE = 16000
OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms at 48 kHz, as WebRTC sends

SPEED_MAX_CHANGE = 0.07  # speed/pitch by resampling: factor in [0.93, 1.07]
STRETCH_MAX_CHANGE = 0.07  # WSOLA time-stretch (pitch kept)
PAD_RANGE_S = (0.0, 1.5)  # leading and trailing silence, each
ROOM_TONE_BELOW_DB = (35.0, 65.0)  # room tone level below the active speech level
GAIN_RANGE_DB = (-30.0, 6.0)  # speech level relative to GAIN_REF_DBFS
GAIN_REF_DBFS = -20.0
PEAK_CEILING = 0.99
OVERDRIVE_RANGE_DB = (0.0, 2.0)  # light clipping: the top dB that get clipped, when chosen
OVERDRIVE_PROB = 0.1
TILT_RANGE_DB = 6.0  # high-shelf minus low-shelf gain, +-
PEAK_EQ_GAIN_DB = 8.0  # random peaking biquads, +-
RT60_RANGE_S = (0.1, 0.8)
DRR_RANGE_DB = (0.0, 15.0)  # direct-to-reverberant ratio
SNR_RANGE_DB = (5.0, 40.0)
OPUS_KBPS_RANGE = (12, 48)
OPUS_LOSS_RANGE = (0.01, 0.05)
OPUS_LOSS_PROB = 0.2

# name -> (low Hz, high Hz); a range picks a random cutoff
BAND_PRESETS: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {
    "telephone": ((300.0, 300.0), (3400.0, 3400.0)),
    "wide": ((100.0, 100.0), (7000.0, 7000.0)),
    "lowpass": (None, (4000.0, 7500.0)),
    "highpass": ((80.0, 300.0), None),
}
NOISE_WEIGHTS: dict[str, float] = {
    "white": 0.15,
    "pink": 0.25,
    "brown": 0.1,
    "babble": 0.25,
    "hum": 0.1,
    "keyboard": 0.15,
}


@dataclass(frozen=True, slots=True)
class AugmentProbabilities:
    """Probability of each optional step of :func:`augment` (multiplied by ``strength``).

    Resampling to 16 kHz, room tone and the gain step always run.
    """

    speed: float = 0.5  # speed + pitch by resampling
    stretch: float = 0.2  # tempo only (WSOLA)
    pad: float = 0.8  # leading/trailing silence
    reverb: float = 0.4
    noise: float = 0.6
    second_noise: float = 0.3  # given noise: add a second kind
    eq: float = 0.5  # tilt + peaking biquads
    band: float = 0.3  # one band-limit preset
    opus: float = 0.5  # not scaled by strength: the codec is the deployment domain


# ---------------------------------------------------------------- alignment helpers


def check_alignment(utt: AlignedUtterance, tol_s: float = 1e-6) -> None:
    """Raise ``ValueError`` unless the phones are contiguous and cover ``[0, duration]``."""
    ph = utt.phones
    if not ph:
        raise ValueError("utterance has no phones")
    if abs(ph[0].start) > tol_s or abs(ph[-1].end - utt.duration) > tol_s:
        raise ValueError(
            f"phones span [{ph[0].start}, {ph[-1].end}], audio [0, {utt.duration}]: "
            "align the phones to the audio before augmenting"
        )
    for p in ph:
        if p.end < p.start:
            raise ValueError(f"phone ends before it starts: {p}")
    for a, b in itertools.pairwise(ph):
        if abs(a.end - b.start) > tol_s:
            raise ValueError(f"phones not contiguous at {a} -> {b}")


def conform_phones(phones: list[Phone], duration: float, tol_s: float = 1e-9) -> list[Phone]:
    """Clip phones to ``[0, duration]``, fill gaps with silence ``""`` and snap both ends.

    Gaps up to ``tol_s`` (use about one sample) are closed instead of becoming silence.
    """
    out: list[Phone] = []
    t = 0.0
    for p in sorted(phones, key=lambda p: p.start):
        start, end = max(p.start, t), min(p.end, duration)
        if end <= start:
            continue
        if start - t > tol_s:
            out.append(Phone("", t, start))
        else:
            start = t
        out.append(Phone(p.ipa, start, end))
        t = end
    if duration - t > tol_s or not out:
        out.append(Phone("", t, duration))
    out[-1] = Phone(out[-1].ipa, out[-1].start, duration)
    return out


def _map_phones(
    phones: list[Phone], scale: float, offset: float, duration: float, sr: int
) -> list[Phone]:
    """Times ``t -> t * scale + offset``, then conformed to the new duration."""
    moved = [
        Phone(p.ipa, float(p.start * scale + offset), float(p.end * scale + offset)) for p in phones
    ]
    return conform_phones(moved, duration, 1.0 / sr)


def _replace(
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


def _speech_power(utt: AlignedUtterance) -> float:
    """Mean power over the non-silent phones (the whole signal if there are none)."""
    x = utt.audio.astype(np.float64)
    mask = np.zeros(len(x), dtype=bool)
    for p in utt.phones:
        if p.ipa:
            mask[round(p.start * utt.sample_rate) : round(p.end * utt.sample_rate)] = True
    sel = x[mask] if mask.any() else x
    return float(np.mean(sel**2)) if len(sel) else 0.0


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / math.sqrt(float(np.mean(x**2)) + 1e-20)


def finalize(audio: np.ndarray) -> np.ndarray:
    """Float32, finite, within ``[-1, 1]``."""
    return np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0).astype(
        np.float32
    )


# ---------------------------------------------------------------- time: rate, speed, stretch


def _resample_audio(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Zero-phase polyphase resampling (sample ``i`` out is time ``i / rate_out``)."""
    if rate_in == rate_out:
        return x
    g = math.gcd(rate_in, rate_out)
    return signal.resample_poly(x, rate_out // g, rate_in // g)


def resample(utt: AlignedUtterance, rate: int = TRAIN_RATE) -> AlignedUtterance:
    """Polyphase resampling to ``rate``; phone times are unchanged (ends snapped)."""
    audio = _resample_audio(utt.audio.astype(np.float64), utt.sample_rate, rate)
    phones = conform_phones(utt.phones, len(audio) / rate, 1.0 / min(rate, utt.sample_rate))
    return _replace(utt, audio, phones, sample_rate=rate)


def change_speed(utt: AlignedUtterance, factor: float) -> AlignedUtterance:
    """Play ``factor`` times faster (pitch up by the same factor); phone times scale by 1/factor.

    The factor is rounded to a ratio of integers below 200 so polyphase resampling stays cheap;
    the factor actually used is recorded in ``meta["aug_speed"]``.
    """
    ratio = fractions.Fraction(1.0 / factor).limit_denominator(200)
    up, down = ratio.numerator, ratio.denominator
    audio = signal.resample_poly(utt.audio.astype(np.float64), up, down)
    duration = len(audio) / utt.sample_rate
    phones = _map_phones(utt.phones, up / down, 0.0, duration, utt.sample_rate)
    return _replace(utt, audio, phones, speed=down / up)


def _wsola(x: np.ndarray, rate: float, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WSOLA tempo change; returns output, input and output frame centres (samples)."""
    n_win = 2 * round(0.016 * sr)
    hs = n_win // 2
    ha = hs * rate
    tol = min(round(0.006 * sr), int(0.45 * ha))  # < ha / 2 keeps the centres increasing
    n_out = round(len(x) / rate)
    n_frames = n_out // hs + 2
    pad = tol + n_win
    xp = np.pad(x, (pad, pad + round(n_frames * ha) - len(x) + n_win))
    win = np.hanning(n_win + 1)[:-1]  # periodic Hann: overlaps at hs sum to one
    y = np.zeros(n_frames * hs + n_win)
    starts = np.zeros(n_frames, dtype=np.int64)
    for k in range(n_frames):
        nominal = pad + round(k * ha) - hs
        if k == 0:
            start = nominal
        else:
            natural = xp[starts[k - 1] + hs : starts[k - 1] + n_win]
            region = xp[nominal - tol : nominal + tol + hs]
            start = nominal - tol + int(np.argmax(np.correlate(region, natural, "valid")))
        starts[k] = start
        y[k * hs : k * hs + n_win] += win * xp[start : start + n_win]
    in_centres = (starts - pad + hs).astype(np.float64)
    out_centres = np.arange(n_frames, dtype=np.float64) * hs
    return y[hs : hs + n_out], in_centres, out_centres


def time_stretch(utt: AlignedUtterance, rate: float) -> AlignedUtterance:
    """Tempo ``rate`` times faster with the pitch kept (WSOLA, 32 ms windows, +-6 ms search).

    Phone times follow the frame positions WSOLA actually chose, so the mapping is exact to
    well under a frame, not just the nominal ``t / rate``.
    """
    sr = utt.sample_rate
    y, c_in, c_out = _wsola(utt.audio.astype(np.float64), rate, sr)
    duration = len(y) / sr

    def warp(t: float) -> float:
        return float(np.interp(t * sr, c_in, c_out)) / sr

    moved = [Phone(p.ipa, warp(p.start), warp(p.end)) for p in utt.phones]
    return _replace(utt, y, conform_phones(moved, duration, 1.0 / sr), stretch=rate)


def pitch_shift(utt: AlignedUtterance, factor: float) -> AlignedUtterance:
    """Pitch times ``factor``, duration kept: speed change then the inverse tempo change."""
    faster = change_speed(utt, factor)
    return time_stretch(faster, 1.0 / float(faster.meta["aug_speed"]))


# ---------------------------------------------------------------- silence and room tone


def pad(utt: AlignedUtterance, lead_s: float, trail_s: float) -> AlignedUtterance:
    """Digital-zero padding at both ends, labelled silence ``""`` (add room tone after)."""
    sr = utt.sample_rate
    n_lead, n_trail = round(lead_s * sr), round(trail_s * sr)
    audio = np.pad(utt.audio, (n_lead, n_trail))
    duration = len(audio) / sr
    phones = _map_phones(utt.phones, 1.0, n_lead / sr, duration, sr)  # padding -> silence
    return _replace(
        utt, audio, _merge_silence(phones), pad_lead=n_lead / sr, pad_trail=n_trail / sr
    )


def _merge_silence(phones: list[Phone]) -> list[Phone]:
    """Join neighbouring silence phones."""
    out: list[Phone] = []
    for p in phones:
        if out and not p.ipa and not out[-1].ipa:
            out[-1] = Phone("", out[-1].start, p.end)
        else:
            out.append(p)
    return out


def colored_noise(rng: np.random.Generator, n: int, exponent: float, sr: int) -> np.ndarray:
    """Unit-RMS noise with power spectrum ``1 / f**exponent`` (0 white, 1 pink, 2 brown)."""
    n_fft = scipy.fft.next_fast_len(n, real=True)
    spec = scipy.fft.rfft(rng.standard_normal(n_fft))
    f = np.maximum(scipy.fft.rfftfreq(n_fft, 1.0 / sr), 20.0)
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0.0
    return _unit_rms(scipy.fft.irfft(spec, n_fft)[:n])


def add_room_tone(
    utt: AlignedUtterance, rng: np.random.Generator, below_speech_db: float
) -> AlignedUtterance:
    """Add stationary room tone (pink/brown mix) everywhere, ``below_speech_db`` under speech.

    This replaces the synthesizer's digital-zero pauses and makes the padding sound like the
    pauses: the same noise runs through the whole utterance, so its onset marks nothing.
    """
    n, sr = len(utt.audio), utt.sample_rate
    tone = _unit_rms(
        colored_noise(rng, n, 1.0, sr) + rng.uniform(0.0, 1.0) * colored_noise(rng, n, 2.0, sr)
    )
    level = math.sqrt(max(_speech_power(utt), 1e-10)) * 10.0 ** (-below_speech_db / 20.0)
    return _replace(utt, utt.audio + level * tone, room_tone_db=-below_speech_db)


# ---------------------------------------------------------------- level


def apply_gain(
    utt: AlignedUtterance, gain_db: float, overdrive_db: float = 0.0
) -> AlignedUtterance:
    """Gain, then a peak limit at :data:`PEAK_CEILING`.

    With ``overdrive_db == 0`` a peak above the ceiling scales the whole signal down (no
    clipping). With ``overdrive_db > 0`` the loudest ``overdrive_db`` above the ceiling are
    hard-clipped instead, the light clipping a hot microphone produces.
    """
    y = utt.audio.astype(np.float64) * 10.0 ** (gain_db / 20.0)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    allowed = PEAK_CEILING * 10.0 ** (overdrive_db / 20.0)
    if peak > allowed:
        y *= allowed / peak
    y = np.clip(y, -PEAK_CEILING, PEAK_CEILING)
    return _replace(utt, y, gain_db=gain_db, overdrive_db=overdrive_db)


def set_level(
    utt: AlignedUtterance, target_dbfs: float, overdrive_db: float = 0.0
) -> AlignedUtterance:
    """Gain that brings the active speech RMS to ``target_dbfs`` (then the peak limit)."""
    current = 10.0 * math.log10(max(_speech_power(utt), 1e-12))
    return apply_gain(utt, target_dbfs - current, overdrive_db)


# ---------------------------------------------------------------- filters


def _biquad_sos(kind: str, f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ-cookbook peaking / low-shelf / high-shelf biquad as one SOS row."""
    a = 10.0 ** (gain_db / 40.0)
    w = 2.0 * math.pi * f0 / sr
    cw, alpha = math.cos(w), math.sin(w) / (2.0 * q)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    else:
        s = 1.0 if kind == "low" else -1.0
        r = 2.0 * math.sqrt(a) * alpha
        b = [
            a * ((a + 1) - s * (a - 1) * cw + r),
            s * 2 * a * ((a - 1) - s * (a + 1) * cw),
            a * ((a + 1) - s * (a - 1) * cw - r),
        ]
        den = [(a + 1) + s * (a - 1) * cw + r, -s * 2 * ((a - 1) + s * (a + 1) * cw)]
        den.append((a + 1) + s * (a - 1) * cw - r)
    return np.array(b + den) / den[0]


def equalize(
    utt: AlignedUtterance, tilt_db: float, peaks: list[tuple[float, float, float]]
) -> AlignedUtterance:
    """Tilt (low shelf at 500 Hz by ``-tilt/2``, high shelf at 2 kHz by ``+tilt/2``) and
    peaking biquads ``(f0 Hz, gain dB, Q)``. Causal minimum-phase filters, as in hardware."""
    sr = utt.sample_rate
    rows = [
        _biquad_sos("low", 500.0, -tilt_db / 2, 0.707, sr),
        _biquad_sos("high", 2000.0, tilt_db / 2, 0.707, sr),
    ]
    rows += [_biquad_sos("peak", min(f, 0.45 * sr), g, q, sr) for f, g, q in peaks]
    y = signal.sosfilt(np.vstack(rows), utt.audio.astype(np.float64))
    return _replace(utt, y, eq_tilt_db=tilt_db, eq_peaks=float(len(peaks)))


def band_limit(
    utt: AlignedUtterance, low_hz: float | None, high_hz: float | None, order: int = 4
) -> AlignedUtterance:
    """Butterworth high-pass / low-pass / band-pass (causal; group delay ~1-2 ms in band)."""
    sr = utt.sample_rate
    high = high_hz if high_hz is not None and high_hz < 0.49 * sr else None
    if low_hz is None and high is None:
        return utt
    if low_hz is not None and high is not None:
        sos = signal.butter(order, [low_hz, high], "bandpass", fs=sr, output="sos")
    elif low_hz is not None:
        sos = signal.butter(order, low_hz, "highpass", fs=sr, output="sos")
    else:
        sos = signal.butter(order, high, "lowpass", fs=sr, output="sos")
    y = signal.sosfilt(sos, utt.audio.astype(np.float64))
    return _replace(utt, y, band_low_hz=low_hz or 0.0, band_high_hz=high or sr / 2)


# ---------------------------------------------------------------- reverberation


def synthetic_rir(
    rng: np.random.Generator, sr: int, rt60: float, drr_db: float, n_early: int = 8
) -> np.ndarray:
    """Causal room impulse response: direct path 1.0 at lag 0, early reflections, a late tail.

    The tail is Gaussian noise decaying by 60 dB in ``rt60`` below 2 kHz and in ``0.6 * rt60``
    above (air and walls absorb highs); it fades in over ~5 ms. Early reflections arrive within
    1-30 ms. Everything after lag 0 is scaled to the direct-to-reverberant ratio ``drr_db``.
    """
    n = max(int(rt60 * sr), 16)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    split = signal.butter(2, 2000.0, "lowpass", fs=sr, output="sos")
    low = signal.sosfilt(split, noise)
    tail = low * np.exp(-6.9 * t / rt60) + (noise - low) * np.exp(-6.9 * t / (0.6 * rt60))
    tail *= 1.0 - np.exp(-t / 0.005)
    early = np.zeros(n)
    lags = rng.integers(max(1, int(0.001 * sr)), max(2, int(0.03 * sr)), n_early) % n
    amps = rng.uniform(0.3, 1.0, n_early) * rng.choice([-1.0, 1.0], n_early)
    np.add.at(early, lags, amps * np.exp(-6.9 * lags / sr / rt60))
    early *= math.sqrt(rng.uniform(0.2, 1.0) * np.sum(tail**2) / max(np.sum(early**2), 1e-20))
    tail += early
    tail[0] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), 1e-20))
    tail[0] = 1.0
    return tail


def reverberate(utt: AlignedUtterance, rir: np.ndarray) -> AlignedUtterance:
    """Convolve with ``rir`` (direct path at lag 0, so nothing shifts); length kept."""
    x = utt.audio.astype(np.float64)
    y = signal.oaconvolve(x, rir)[: len(x)] if len(x) else x
    return _replace(utt, y, rir_s=len(rir) / utt.sample_rate)


# ---------------------------------------------------------------- noise


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
    return _unit_rms(y)


def _babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    talkers = [
        rng.uniform(0.5, 1.0) * _pseudo_talker(rng, n, sr) for _ in range(rng.integers(3, 8))
    ]
    return _unit_rms(np.sum(talkers, axis=0))


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
    return _unit_rms(y)


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
    return _unit_rms(y[:n])


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
    level = math.sqrt(max(_speech_power(utt), 1e-10) * 10.0 ** (-snr_db / 10.0))
    tag = f"{utt.meta.get('aug_noise', '')}+{kind}".strip("+")
    return _replace(utt, utt.audio + level * noise, noise=tag, snr_db=snr_db)


# ---------------------------------------------------------------- Opus (WebRTC) round trip


def _opus_encoder(bitrate: int, complexity: int) -> av.AudioCodecContext:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = OPUS_RATE
    enc.layout = "mono"
    enc.format = "flt"
    enc.bit_rate = bitrate
    enc.time_base = fractions.Fraction(1, OPUS_RATE)
    # WebRTC's choices: VoIP application, VBR, in-band FEC on, 20 ms frames.
    enc.options = {
        "application": "voip",
        "vbr": "on",
        "fec": "1",
        "frame_duration": "20",
        "compression_level": str(complexity),
    }
    enc.open()
    return enc


def _opus_codec(
    x: np.ndarray, bitrate: int, complexity: int, lost: np.ndarray | None
) -> np.ndarray:
    """Encode 48 kHz mono in 20 ms frames and decode with FFmpeg's decoder (as aiortc does).

    ``lost[i]`` drops packet ``i``: 20 ms of zeros take its place (FFmpeg's decoder has no
    concealment for a missing packet). The first two packets are never dropped.
    Output is not delay-compensated; see :func:`opus_delay`.
    """
    enc = _opus_encoder(bitrate, complexity)
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate = OPUS_RATE
    dec.layout = "mono"
    dec.extradata = enc.extradata  # OpusHead: the decoder drops the encoder's pre-skip
    frames = np.zeros(-(-len(x) // OPUS_FRAME) * OPUS_FRAME, np.float32)
    frames[: len(x)] = x
    packets = []
    for i, block in enumerate(frames.reshape(-1, OPUS_FRAME)):
        frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = OPUS_RATE, i * OPUS_FRAME
        packets += enc.encode(frame)
    packets += enc.encode(None)
    out: list[np.ndarray] = []
    for i, packet in enumerate(packets):
        if lost is not None and i >= 2 and i < len(lost) and lost[i]:
            out.append(np.zeros(OPUS_FRAME, np.float32))
            continue
        out += [f.to_ndarray().reshape(-1) for f in dec.decode(packet)]
    out += [f.to_ndarray().reshape(-1) for f in dec.decode(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=1)
def opus_delay() -> int:
    """Measured lag (48 kHz samples) of the decoded stream behind the encoder's input.

    Measured once per process: 1 s of white noise through the codec at 128 kbit/s (where it
    keeps the waveform), then the peak of the cross-correlation within +-40 ms. Opus's delay
    does not depend on the bitrate. The encoder's pre-skip (312 samples, 6.5 ms, signalled in
    the OpusHead) is already dropped by FFmpeg's decoder, so this is 0 with PyAV 18; measuring
    keeps the compensation right if a build behaves differently.
    """
    x = (0.1 * np.random.default_rng(0).standard_normal(OPUS_RATE)).astype(np.float32)
    y = _opus_codec(x, 128000, 9, None)[: len(x)]
    corr = signal.correlate(y, x, mode="full", method="fft")
    max_lag, mid = 2 * OPUS_FRAME, len(x) - 1
    return int(np.argmax(corr[mid - max_lag : mid + max_lag + 1])) - max_lag


def opus_round_trip(
    utt: AlignedUtterance,
    bitrate: int = 32000,
    *,
    complexity: int = 9,
    loss_rate: float = 0.0,
    rng: np.random.Generator | None = None,
) -> AlignedUtterance:
    """What a browser microphone's audio goes through: up to 48 kHz, Opus at ``bitrate`` in
    20 ms frames, FFmpeg decode, s16 (aiortc hands s16), back to the input rate.

    The codec's measured delay (:func:`opus_delay`) is removed so the phone times stay exact.
    ``loss_rate`` drops that share of packets at random (needs ``rng``), leaving 20 ms gaps.
    """
    sr = utt.sample_rate
    x = _resample_audio(utt.audio.astype(np.float64), sr, OPUS_RATE)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    lost = None
    if loss_rate > 0.0:
        if rng is None:
            raise ValueError("opus_round_trip with loss_rate > 0 needs an rng")
        lost = rng.random(len(x) // OPUS_FRAME + 4) < loss_rate
    delay = opus_delay()
    y = _opus_codec(x, bitrate, complexity, lost).astype(np.float64)
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay), y])
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    y = np.round(np.clip(y, -1.0, 1.0) * 32767.0) / 32768.0
    audio = _resample_audio(y, OPUS_RATE, sr)[: len(utt.audio)]
    audio = np.pad(audio, (0, len(utt.audio) - len(audio)))
    n_lost = float(np.sum(lost)) if lost is not None else 0.0
    return _replace(utt, audio, opus_kbps=bitrate / 1000, opus_lost=n_lost)


# ---------------------------------------------------------------- random chain


def _spread(center: float, half_width: float, rng: np.random.Generator) -> float:
    return float(rng.uniform(center - half_width, center + half_width))


def random_eq(
    utt: AlignedUtterance, rng: np.random.Generator, strength: float = 1.0
) -> AlignedUtterance:
    """Random tilt and 0-3 peaking biquads (200 Hz - 6 kHz, Q 0.5-4)."""
    peaks = [
        (
            float(math.exp(rng.uniform(math.log(200.0), math.log(6000.0)))),
            _spread(0.0, PEAK_EQ_GAIN_DB * strength, rng),
            float(rng.uniform(0.5, 4.0)),
        )
        for _ in range(rng.integers(0, 4))
    ]
    return equalize(utt, _spread(0.0, TILT_RANGE_DB * strength, rng), peaks)


def random_band_limit(utt: AlignedUtterance, rng: np.random.Generator) -> AlignedUtterance:
    """One of :data:`BAND_PRESETS`, cutoffs drawn from its ranges."""
    name = str(rng.choice(sorted(BAND_PRESETS)))
    low, high = BAND_PRESETS[name]
    out = band_limit(
        utt,
        None if low is None else float(rng.uniform(*low)),
        None if high is None else float(rng.uniform(*high)),
    )
    return _replace(out, out.audio, band=name)


def random_reverb(
    utt: AlignedUtterance, rng: np.random.Generator, strength: float = 1.0
) -> AlignedUtterance:
    """Synthetic room: RT60 and DRR drawn from :data:`RT60_RANGE_S` and :data:`DRR_RANGE_DB`."""
    lo, hi = RT60_RANGE_S
    rt60 = float(rng.uniform(lo, lo + (hi - lo) * min(strength, 1.0)))
    drr = float(rng.uniform(*DRR_RANGE_DB))
    rir = synthetic_rir(rng, utt.sample_rate, rt60, drr, int(rng.integers(4, 12)))
    out = reverberate(utt, rir)
    return _replace(out, out.audio, rt60_s=rt60, drr_db=drr)


def random_noise(
    utt: AlignedUtterance, rng: np.random.Generator, strength: float = 1.0
) -> AlignedUtterance:
    """One noise kind (weights :data:`NOISE_WEIGHTS`) at an SNR drawn from :data:`SNR_RANGE_DB`
    (the lower bound rises towards the upper as ``strength`` falls)."""
    kinds = sorted(NOISE_WEIGHTS)
    weights = np.array([NOISE_WEIGHTS[k] for k in kinds])
    kind = str(rng.choice(kinds, p=weights / weights.sum()))
    lo, hi = SNR_RANGE_DB
    snr = float(rng.uniform(hi - (hi - lo) * min(strength, 1.0), hi))
    return add_noise(utt, rng, kind, snr)


def random_opus(utt: AlignedUtterance, rng: np.random.Generator) -> AlignedUtterance:
    """Opus round trip at 12-48 kbit/s (whole kbit/s), complexity 5-10, packet loss of 1-5%
    with probability :data:`OPUS_LOSS_PROB`."""
    kbps = int(rng.integers(OPUS_KBPS_RANGE[0], OPUS_KBPS_RANGE[1] + 1))
    loss = float(rng.uniform(*OPUS_LOSS_RANGE)) if rng.random() < OPUS_LOSS_PROB else 0.0
    return opus_round_trip(
        utt, kbps * 1000, complexity=int(rng.integers(5, 11)), loss_rate=loss, rng=rng
    )


def augment(
    utt: AlignedUtterance,
    rng: np.random.Generator,
    strength: float = 1.0,
    probs: AugmentProbabilities | None = None,
) -> AlignedUtterance:
    """A random chain in the order the sound travels: 16 kHz -> speed -> tempo -> padding ->
    room tone -> room reverb -> noise in the room -> microphone EQ and band -> level -> Opus.

    EQ and band limits come after the noise (not before) because a microphone colours the noise
    it picks up as well; SNRs are set where the noise is added. ``strength`` (0..1, more is
    clipped for ranges) scales every probability but Opus's and the ranges; 0 leaves 16 kHz,
    room tone, the level step and the Opus coin (use :func:`clean` for no augmentation).

    Default probabilities (:class:`AugmentProbabilities`): speed 0.5, tempo 0.2, padding 0.8,
    reverb 0.4, noise 0.6 (then a second kind 0.3), EQ 0.5, band limit 0.3, Opus 0.5; room tone
    and level always. Parameters are recorded in ``meta["aug_*"]``.
    """
    p = probs or AugmentProbabilities()
    s = max(strength, 0.0)

    def chance(prob: float) -> bool:
        return bool(rng.random() < min(1.0, prob * s))

    out = resample(utt, TRAIN_RATE)
    sm = min(s, 1.0)
    if chance(p.speed):
        out = change_speed(out, _spread(1.0, SPEED_MAX_CHANGE * sm, rng))
    if chance(p.stretch):
        out = time_stretch(out, _spread(1.0, STRETCH_MAX_CHANGE * sm, rng))
    if chance(p.pad):
        hi = PAD_RANGE_S[1] * sm
        out = pad(out, float(rng.uniform(0.0, hi)), float(rng.uniform(0.0, hi)))
    out = add_room_tone(out, rng, float(rng.uniform(*ROOM_TONE_BELOW_DB)))
    if chance(p.reverb):
        out = random_reverb(out, rng, sm)
    if chance(p.noise):
        out = random_noise(out, rng, sm)
        if rng.random() < p.second_noise:
            out = random_noise(out, rng, sm)
    if chance(p.eq):
        out = random_eq(out, rng, sm)
    if chance(p.band):
        out = random_band_limit(out, rng)
    overdrive = float(rng.uniform(*OVERDRIVE_RANGE_DB)) if rng.random() < OVERDRIVE_PROB else 0.0
    lo, hi = GAIN_RANGE_DB
    out = set_level(out, GAIN_REF_DBFS + float(rng.uniform(lo * sm, hi * sm)), overdrive)
    if rng.random() < p.opus:
        out = random_opus(out, rng)
    return _replace(out, finalize(out.audio))


def clean(utt: AlignedUtterance, rng: np.random.Generator | None = None) -> AlignedUtterance:
    """The un-augmented path: 16 kHz, 50-300 ms of padding at each end and room tone 60 dB
    under the speech (so there are no digital-zero pauses). Without ``rng``, seed 0."""
    gen = rng if rng is not None else np.random.default_rng(0)
    out = resample(utt, TRAIN_RATE)
    out = pad(out, float(gen.uniform(0.05, 0.3)), float(gen.uniform(0.05, 0.3)))
    out = add_room_tone(out, gen, 60.0)
    return _replace(out, finalize(out.audio))
