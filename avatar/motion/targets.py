"""Phone alignment -> per-frame blendshape and viseme targets, with coarticulation.

Each segment (see :mod:`avatar.motion.phonemes`) has a target *pose* (its viseme's pose; vowels
open the jaw by their height) and a *dominance* per channel group (how strongly it imposes that
pose on its neighbours, after Cohen & Massaro 1993). The pose at time ``t`` is the
dominance-weighted mean of the segments' poses, where a segment's dominance is flat over the
middle of the segment and decays exponentially outside it (time constant ``TAU_S``). Consonants
that do not use the lips (k, g, h, ...) have low lip dominance, so the lips take the shape of the
next vowel early: "coo" is rounded already during the k.

Bilabials (p, b, m) must fully close the lips, so their core overrides the blend; labiodentals
(f, v) likewise bring the lower lip to the teeth. Silence pulls the face to rest.

Channel conventions (ARKit): ``jawOpen`` opens the jaw; ``mouthClose`` closes the lips against
an open jaw, so the visible lip gap is roughly ``jawOpen - mouthClose`` (plus
``mouthLowerDown``/``mouthUpperUp``). On P/B/M ``jawOpen`` is near zero and the lips press.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from avatar.motion.channels import BLENDSHAPE_INDEX, BLENDSHAPES, VISEME_INDEX, VISEMES
from avatar.motion.phonemes import VOWEL_OPENNESS, split_segments, viseme_of


class TimedPhone(Protocol):
    """One phone of an alignment (``avatar.data.types.Phone`` is one): IPA symbol(s), ``""`` for
    silence, with its start and end in seconds."""

    @property
    def ipa(self) -> str: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


TAU_S = 0.045  # how far a segment's dominance reaches beyond its core
CLOSURE_RAMP_S = 0.015  # ramp into/out of a forced closure

# Pose per viseme (unlisted channels are 0). Values are ARKit coefficients 0..1.
_POSES: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {
        "jawOpen": 0.02,
        "mouthClose": 0.02,
        "mouthPressLeft": 0.45,
        "mouthPressRight": 0.45,
        "mouthRollLower": 0.15,
        "mouthRollUpper": 0.10,
    },
    "FF": {
        "jawOpen": 0.08,
        "mouthRollLower": 0.55,
        "mouthUpperUpLeft": 0.25,
        "mouthUpperUpRight": 0.25,
        "mouthClose": 0.03,
    },
    "TH": {"jawOpen": 0.14, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15},
    "DD": {"jawOpen": 0.15, "mouthStretchLeft": 0.10, "mouthStretchRight": 0.10},
    "kk": {"jawOpen": 0.20, "mouthStretchLeft": 0.08, "mouthStretchRight": 0.08},
    "CH": {
        "jawOpen": 0.12,
        "mouthFunnel": 0.45,
        "mouthPucker": 0.25,
        "mouthUpperUpLeft": 0.20,
        "mouthUpperUpRight": 0.20,
    },
    "SS": {
        "jawOpen": 0.06,
        "mouthStretchLeft": 0.30,
        "mouthStretchRight": 0.30,
        "mouthSmileLeft": 0.12,
        "mouthSmileRight": 0.12,
    },
    "nn": {"jawOpen": 0.14, "mouthStretchLeft": 0.08, "mouthStretchRight": 0.08},
    "RR": {"jawOpen": 0.16, "mouthFunnel": 0.25, "mouthPucker": 0.20},
    "aa": {
        "jawOpen": 0.70,
        "mouthLowerDownLeft": 0.30,
        "mouthLowerDownRight": 0.30,
        "mouthUpperUpLeft": 0.10,
        "mouthUpperUpRight": 0.10,
    },
    "E": {
        "jawOpen": 0.40,
        "mouthStretchLeft": 0.25,
        "mouthStretchRight": 0.25,
        "mouthLowerDownLeft": 0.20,
        "mouthLowerDownRight": 0.20,
    },
    "ih": {
        "jawOpen": 0.15,
        "mouthStretchLeft": 0.35,
        "mouthStretchRight": 0.35,
        "mouthSmileLeft": 0.25,
        "mouthSmileRight": 0.25,
    },
    "oh": {"jawOpen": 0.45, "mouthFunnel": 0.55, "mouthPucker": 0.20},
    "ou": {"jawOpen": 0.15, "mouthPucker": 0.75, "mouthFunnel": 0.35},
}

# Dominance (jaw group, lip group) per viseme.
_DOMINANCE: dict[str, tuple[float, float]] = {
    "sil": (0.5, 0.4),
    "PP": (1.0, 1.0),
    "FF": (0.8, 1.0),
    "TH": (0.6, 0.5),
    "DD": (0.5, 0.3),
    "kk": (0.3, 0.1),
    "CH": (0.6, 0.8),
    "SS": (0.8, 0.5),
    "nn": (0.5, 0.3),
    "RR": (0.4, 0.6),
    "aa": (1.0, 0.8),
    "E": (1.0, 0.7),
    "ih": (1.0, 0.8),
    "oh": (1.0, 1.0),
    "ou": (1.0, 1.0),
}
_LOW_DOMINANCE_SYMBOLS = {"h": 0.08, "ɦ": 0.08, "ʔ": 0.1, "ħ": 0.1, "ʕ": 0.1}

_JAW_CHANNELS = ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight")
JAW_MASK = np.array([n in _JAW_CHANNELS for n in BLENDSHAPES])
_FORCED = {"PP": 1.0, "FF": 0.8}  # visemes whose core overrides the blend, and how much


@dataclass(frozen=True, slots=True)
class ArticSegment:
    """A segment on the timeline with its viseme, pose and dominances."""

    symbol: str
    viseme: str
    start: float
    end: float
    pose: np.ndarray  # (n_blendshapes,)
    dom_jaw: float
    dom_lips: float


def viseme_pose(viseme: str, symbol: str = "") -> np.ndarray:
    """The target pose of a segment; vowels take their jaw opening from their height."""
    pose = np.zeros(len(BLENDSHAPES), np.float32)
    for name, value in _POSES[viseme].items():
        pose[BLENDSHAPE_INDEX[name]] = value
    if symbol in VOWEL_OPENNESS:
        pose[BLENDSHAPE_INDEX["jawOpen"]] = VOWEL_OPENNESS[symbol]
    return pose


def segments_of(phones: Sequence[TimedPhone]) -> list[ArticSegment]:
    """Expand an alignment into articulatory segments (diphthongs split, silence kept)."""
    out: list[ArticSegment] = []
    for ph in phones:
        parts = split_segments(ph.ipa) or []
        if not parts:
            out.append(_segment("", ph.start, ph.end))
            continue
        t = ph.start
        for part in parts:
            end = t + part.share * (ph.end - ph.start)
            out.append(_segment(part.symbol, t, end))
            t = end
    return out


def _segment(symbol: str, start: float, end: float) -> ArticSegment:
    vis = viseme_of(symbol)
    dom_jaw, dom_lips = _DOMINANCE[vis]
    low = _LOW_DOMINANCE_SYMBOLS.get(symbol)
    if low is not None:
        dom_jaw, dom_lips = low, low
    return ArticSegment(symbol, vis, start, end, viseme_pose(vis, symbol), dom_jaw, dom_lips)


def _dominance(seg: ArticSegment, t: np.ndarray) -> np.ndarray:
    """Flat over the middle half of the segment, exponential decay outside it."""
    mid = 0.5 * (seg.start + seg.end)
    half_core = 0.25 * (seg.end - seg.start)
    d = np.maximum(np.abs(t - mid) - half_core, 0.0)
    return np.exp(-d / TAU_S)


def _forced_weight(seg: ArticSegment, t: np.ndarray) -> np.ndarray:
    """1 inside the core of a closure, linear ramps of CLOSURE_RAMP_S at its edges."""
    dur = seg.end - seg.start
    lo, hi = seg.start + 0.1 * dur, seg.end - 0.1 * dur
    up = (t - (lo - CLOSURE_RAMP_S)) / CLOSURE_RAMP_S
    down = ((hi + CLOSURE_RAMP_S) - t) / CLOSURE_RAMP_S
    return np.clip(np.minimum(up, down), 0.0, 1.0)


def blendshape_targets(segs: list[ArticSegment], t: np.ndarray) -> np.ndarray:
    """Coarticulated pose at times ``t`` (seconds), shape (len(t), n_blendshapes)."""
    n = len(BLENDSHAPES)
    num = np.zeros((len(t), n), np.float64)
    den = np.zeros((len(t), n), np.float64)
    reach = 8 * TAU_S
    for seg in segs:
        near = (t > seg.start - reach) & (t < seg.end + reach)
        if not near.any():
            continue
        d = _dominance(seg, t[near])[:, None]
        w = d * np.where(JAW_MASK, seg.dom_jaw, seg.dom_lips)[None, :]
        num[near] += w * seg.pose[None, :]
        den[near] += w
    pose = np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0)
    for seg in segs:
        strength = _FORCED.get(seg.viseme)
        if strength is None:
            continue
        near = (t > seg.start - CLOSURE_RAMP_S) & (t < seg.end + CLOSURE_RAMP_S)
        if near.any():
            w = strength * _forced_weight(seg, t[near])[:, None]
            pose[near] = (1 - w) * pose[near] + w * seg.pose[None, :]
    return pose.astype(np.float32)


def viseme_labels(segs: list[ArticSegment], t: np.ndarray) -> np.ndarray:
    """Index of the viseme of the segment covering each time (``sil`` outside), (len(t),)."""
    labels = np.full(len(t), VISEME_INDEX["sil"], np.int64)
    if not segs:
        return labels
    starts = np.array([s.start for s in segs])
    idx = np.searchsorted(starts, t, side="right") - 1
    inside = (idx >= 0) & (t < segs[-1].end)
    vis = np.array([VISEME_INDEX[s.viseme] for s in segs])
    labels[inside] = vis[idx[inside]]
    return labels


def motion_targets(phones: Sequence[TimedPhone], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blendshape targets (len(t), n_blendshapes) and viseme labels (len(t),) at times ``t``."""
    segs = segments_of(phones)
    return blendshape_targets(segs, t), viseme_labels(segs, t)


def openness(blendshapes: np.ndarray) -> np.ndarray:
    """Jaw opening channel of a blendshape array (..., n_blendshapes)."""
    return blendshapes[..., BLENDSHAPE_INDEX["jawOpen"]]


def describe_tables() -> str:
    """Markdown table of viseme poses and dominances (for docs/motion.md)."""
    lines = ["| viseme | jaw dom. | lip dom. | pose |", "| --- | --- | --- | --- |"]
    for vis in VISEMES:
        pose = ", ".join(f"{k} {v:.2f}" for k, v in _POSES[vis].items()) or "rest"
        dj, dl = _DOMINANCE[vis]
        lines.append(f"| {vis} | {dj:.1f} | {dl:.1f} | {pose} |")
    return "\n".join(lines)
