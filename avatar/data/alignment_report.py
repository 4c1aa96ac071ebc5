"""Sanity checks of aligned utterances against their signal, and a printed quality report.

Works for any aligned utterances: human speech aligned by pocketsphinx and synthetic speech
with the synthesizer's own timings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from avatar.data.align import FRAME_S, frame_levels_db, loud_span
from avatar.data.types import AlignedUtterance
from avatar.motion.phonemes import SILENCE, VOWELS, split_segments

STOPS = frozenset({"p", "b", "t", "d", "k", "ɡ"})


def phone_levels_db(utt: AlignedUtterance) -> list[float]:
    """Median level (dB re full scale) of the 10 ms frames inside each phone.

    The median ignores a stop's short release burst, so a closure reads as quiet.
    """
    levels = frame_levels_db(utt.audio, utt.sample_rate)
    out = []
    for p in utt.phones:
        a = int(p.start / FRAME_S)
        seg = levels[a : max(a + 1, round(p.end / FRAME_S))]
        out.append(float(np.median(seg)) if seg.size else math.nan)
    return out


def phone_class(ipa: str) -> str:
    """``sil``, ``vowel``, ``stop`` or ``other`` for one IPA phone."""
    segs = split_segments(ipa)
    if not segs:
        return "sil"
    if segs[0].symbol in VOWELS:
        return "vowel"
    return "stop" if segs[0].symbol in STOPS else "other"


def loud_silence_s(utt: AlignedUtterance, below_peak_db: float = 20.0) -> float:
    """Seconds of frames within ``below_peak_db`` of the clip's peak that are labelled silence.

    The aligner's typical failure is to call the start of a loud vowel silence; this finds it.
    """
    levels = frame_levels_db(utt.audio, utt.sample_rate)
    silent = np.zeros(levels.size, dtype=bool)
    for p in utt.phones:
        if p.ipa == SILENCE:
            silent[round(p.start / FRAME_S) : round(p.end / FRAME_S)] = True
    loud = levels > float(np.max(levels, initial=-200.0)) - below_peak_db
    return float(np.sum(loud & silent) * FRAME_S)


def tiles_audio(utt: AlignedUtterance, tol: float = 1e-6) -> bool:
    """True when the phones start at 0, end at the audio's end and leave no gaps."""
    if not utt.phones or abs(utt.phones[0].start) > tol:
        return False
    if abs(utt.phones[-1].end - utt.duration) > tol:
        return False
    return all(abs(a.end - b.start) <= tol for a, b in pairwise(utt.phones))


@dataclass(frozen=True, slots=True)
class UtteranceCheck:
    """Sanity numbers of one aligned utterance."""

    n_phones: int
    speech_s: float
    min_phone_s: float
    tiles: bool
    vowel_minus_stop_db: float  # nan without both vowels and stops
    loud_silence_s: float
    onset_error_s: float  # aligned speech start minus the start of the loud part
    offset_error_s: float  # aligned speech end minus the end of the loud part


def check_utterance(utt: AlignedUtterance) -> UtteranceCheck:
    """Compare an alignment with the signal: levels by phone class, loud part, tiling."""
    levels = phone_levels_db(utt)
    classes = [phone_class(p.ipa) for p in utt.phones]
    vowel = [lv for lv, c in zip(levels, classes, strict=True) if c == "vowel"]
    stop = [lv for lv, c in zip(levels, classes, strict=True) if c == "stop"]
    speech = [p for p, c in zip(utt.phones, classes, strict=True) if c != "sil"]
    span = loud_span(frame_levels_db(utt.audio, utt.sample_rate))
    on, off = (span[0] * FRAME_S, span[1] * FRAME_S) if span else (math.nan, math.nan)
    return UtteranceCheck(
        n_phones=len(utt.phones),
        speech_s=sum(p.end - p.start for p in speech),
        min_phone_s=min((p.end - p.start for p in utt.phones), default=math.nan),
        tiles=tiles_audio(utt),
        vowel_minus_stop_db=float(np.mean(vowel) - np.mean(stop)) if vowel and stop else math.nan,
        loud_silence_s=loud_silence_s(utt),
        onset_error_s=speech[0].start - on if speech else math.nan,
        offset_error_s=speech[-1].end - off if speech else math.nan,
    )


@dataclass(frozen=True, slots=True)
class QualitySummary:
    """Totals and sanity numbers of :func:`alignment_quality_report`."""

    n_utterances: int
    total_s: float
    speech_s: float
    n_phones: int
    n_zero_length: int
    n_not_tiling: int  # utterances whose phones do not tile [0, duration]
    min_phone_s: float
    vowel_minus_stop_db: float  # mean over utterances having both
    frac_vowels_louder: float  # share of those utterances where vowels are louder than stops
    max_loud_silence_s: float
    median_abs_onset_error_s: float
    median_abs_offset_error_s: float


def _nan_stat(values: list[float], fn: Callable[[np.ndarray], Any]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(fn(arr)) if arr.size else math.nan


def summarize(utts: list[AlignedUtterance], checks: list[UtteranceCheck]) -> QualitySummary:
    """Totals over :func:`check_utterance` results."""
    diffs = [c.vowel_minus_stop_db for c in checks]
    return QualitySummary(
        n_utterances=len(utts),
        total_s=sum(u.duration for u in utts),
        speech_s=sum(c.speech_s for c in checks),
        n_phones=sum(c.n_phones for c in checks),
        n_zero_length=sum(p.end <= p.start for u in utts for p in u.phones),
        n_not_tiling=sum(not c.tiles for c in checks),
        min_phone_s=_nan_stat([c.min_phone_s for c in checks], np.min),
        vowel_minus_stop_db=_nan_stat(diffs, np.mean),
        frac_vowels_louder=_nan_stat(diffs, lambda a: np.mean(a > 0)),
        max_loud_silence_s=_nan_stat([c.loud_silence_s for c in checks], np.max),
        median_abs_onset_error_s=_nan_stat([abs(c.onset_error_s) for c in checks], np.median),
        median_abs_offset_error_s=_nan_stat([abs(c.offset_error_s) for c in checks], np.median),
    )


def alignment_quality_report(
    utts: list[AlignedUtterance], emit: Callable[[str], None] = print
) -> QualitySummary:
    """Print one line per utterance and a summary; return the summary.

    Columns: duration, phone count, speech seconds, shortest phone, vowel minus stop level (dB),
    loud signal labelled silence (s), aligned speech start/end minus the loud part's, text.
    Works for any aligned utterances (synthetic ones too).
    """
    emit(f"{'source':48s} {'dur':>5s} {'n':>3s} {'speech':>6s} {'min':>5s} {'V-S dB':>6s} "
         f"{'loud0':>5s} {'on':>6s} {'off':>6s} text")  # fmt: skip
    checks = [check_utterance(u) for u in utts]
    for u, c in zip(utts, checks, strict=True):
        emit(f"{u.source[:48]:48s} {u.duration:5.2f} {c.n_phones:3d} {c.speech_s:6.2f} "
             f"{c.min_phone_s:5.3f} {c.vowel_minus_stop_db:6.1f} {c.loud_silence_s:5.2f} "
             f"{c.onset_error_s:+6.2f} {c.offset_error_s:+6.2f} {u.text}")  # fmt: skip
    summary = summarize(utts, checks)
    emit(str(summary))
    return summary
