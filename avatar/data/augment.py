"""Augmentations that hide the synthesizer's fingerprint and keep the phone alignment exact.

Every transform takes an :class:`AlignedUtterance` and returns a new one; those with random
choices take a ``numpy.random.Generator``. Whatever changes time (speed, stretch, padding, the
codec's delay) moves the phone times with it, and the output's phones cover ``[0, duration]``
without gaps (:func:`check_alignment`). Each transform records what it did in ``meta["aug_*"]``.

Two entry points: :func:`augment` (a random chain, see :class:`AugmentProbabilities`) and
:func:`clean` (16 kHz, a little padding with room tone). Both return float32 16 kHz audio in
``[-1, 1]``.

The noise generators live in :mod:`avatar.data.noise`, the Opus round trip in
:mod:`avatar.data.codec`; their public names are re-exported here.
"""

from __future__ import annotations

import fractions
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from avatar.data.audio_ops import finalize, resample_audio, speech_power, unit_rms, with_audio
from avatar.data.codec import OPUS_FRAME, OPUS_RATE, opus_delay, opus_round_trip
from avatar.data.noise import NOISE_WEIGHTS, add_noise, colored_noise, make_noise
from avatar.data.types import AlignedUtterance, Phone

__all__ = [
    "BAND_PRESETS",
    "DRR_RANGE_DB",
    "GAIN_RANGE_DB",
    "GAIN_REF_DBFS",
    "NOISE_WEIGHTS",
    "OPUS_FRAME",
    "OPUS_KBPS_RANGE",
    "OPUS_LOSS_PROB",
    "OPUS_LOSS_RANGE",
    "OPUS_RATE",
    "OVERDRIVE_PROB",
    "OVERDRIVE_RANGE_DB",
    "PAD_RANGE_S",
    "PEAK_CEILING",
    "PEAK_EQ_GAIN_DB",
    "ROOM_TONE_BELOW_DB",
    "RT60_RANGE_S",
    "SNR_RANGE_DB",
    "SPEED_MAX_CHANGE",
    "STRETCH_MAX_CHANGE",
    "TILT_RANGE_DB",
    "TRAIN_RATE",
    "AugmentProbabilities",
    "add_noise",
    "add_room_tone",
    "apply_gain",
    "augment",
    "band_limit",
    "change_speed",
    "check_alignment",
    "clean",
    "colored_noise",
    "conform_phones",
    "equalize",
    "finalize",
    "make_noise",
    "opus_delay",
    "opus_round_trip",
    "pad",
    "pitch_shift",
    "random_band_limit",
    "random_eq",
    "random_noise",
    "random_opus",
    "random_reverb",
    "resample",
    "reverberate",
    "set_level",
    "synthetic_rir",
    "time_stretch",
]

TRAIN_RATE = 16000

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


# ---------------------------------------------------------------- time: rate, speed, stretch


def resample(utt: AlignedUtterance, rate: int = TRAIN_RATE) -> AlignedUtterance:
    """Polyphase resampling to ``rate``; phone times are unchanged (ends snapped)."""
    audio = resample_audio(utt.audio.astype(np.float64), utt.sample_rate, rate)
    phones = conform_phones(utt.phones, len(audio) / rate, 1.0 / min(rate, utt.sample_rate))
    return with_audio(utt, audio, phones, sample_rate=rate)


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
    return with_audio(utt, audio, phones, speed=down / up)


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
    return with_audio(utt, y, conform_phones(moved, duration, 1.0 / sr), stretch=rate)


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
    return with_audio(
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


def add_room_tone(
    utt: AlignedUtterance, rng: np.random.Generator, below_speech_db: float
) -> AlignedUtterance:
    """Add stationary room tone (pink/brown mix) everywhere, ``below_speech_db`` under speech.

    This replaces the synthesizer's digital-zero pauses and makes the padding sound like the
    pauses: the same noise runs through the whole utterance, so its onset marks nothing.
    """
    n, sr = len(utt.audio), utt.sample_rate
    tone = unit_rms(
        colored_noise(rng, n, 1.0, sr) + rng.uniform(0.0, 1.0) * colored_noise(rng, n, 2.0, sr)
    )
    level = math.sqrt(max(speech_power(utt), 1e-10)) * 10.0 ** (-below_speech_db / 20.0)
    return with_audio(utt, utt.audio + level * tone, room_tone_db=-below_speech_db)


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
    return with_audio(utt, y, gain_db=gain_db, overdrive_db=overdrive_db)


def set_level(
    utt: AlignedUtterance, target_dbfs: float, overdrive_db: float = 0.0
) -> AlignedUtterance:
    """Gain that brings the active speech RMS to ``target_dbfs`` (then the peak limit)."""
    current = 10.0 * math.log10(max(speech_power(utt), 1e-12))
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
    return with_audio(utt, y, eq_tilt_db=tilt_db, eq_peaks=float(len(peaks)))


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
    return with_audio(utt, y, band_low_hz=low_hz or 0.0, band_high_hz=high or sr / 2)


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
    return with_audio(utt, y, rir_s=len(rir) / utt.sample_rate)


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
    return with_audio(out, out.audio, band=name)


def random_reverb(
    utt: AlignedUtterance, rng: np.random.Generator, strength: float = 1.0
) -> AlignedUtterance:
    """Synthetic room: RT60 and DRR drawn from :data:`RT60_RANGE_S` and :data:`DRR_RANGE_DB`."""
    lo, hi = RT60_RANGE_S
    rt60 = float(rng.uniform(lo, lo + (hi - lo) * min(strength, 1.0)))
    drr = float(rng.uniform(*DRR_RANGE_DB))
    rir = synthetic_rir(rng, utt.sample_rate, rt60, drr, int(rng.integers(4, 12)))
    out = reverberate(utt, rir)
    return with_audio(out, out.audio, rt60_s=rt60, drr_db=drr)


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
    return with_audio(out, finalize(out.audio))


def clean(utt: AlignedUtterance, rng: np.random.Generator | None = None) -> AlignedUtterance:
    """The un-augmented path: 16 kHz, 50-300 ms of padding at each end and room tone 60 dB
    under the speech (so there are no digital-zero pauses). Without ``rng``, seed 0."""
    gen = rng if rng is not None else np.random.default_rng(0)
    out = resample(utt, TRAIN_RATE)
    out = pad(out, float(gen.uniform(0.05, 0.3)), float(gen.uniform(0.05, 0.3)))
    out = add_room_tone(out, gen, 60.0)
    return with_audio(out, finalize(out.audio))
