"""Judge an audio-to-motion backend on aligned speech, through the streaming runtime.

For each utterance the audio is streamed through :class:`MotionStreamer` exactly as the server
would, and every video frame is compared with the targets derived from the alignment at that
frame's time:

- ``jaw_r``: Pearson correlation of predicted ``jawOpen`` with the alignment-derived openness;
- ``energy_r``: the same for a baseline that opens the jaw with the audio's loudness (log RMS in
  a 40 ms window centred on the frame) -- what a model must beat to be worth running;
- ``viseme_acc`` (all frames) and ``viseme_acc_speech`` (frames inside phones), argmax vs label;
- ``pbm_jaw``: mean predicted ``jawOpen`` on P/B/M frames, ``pbm_closed``: share of P/B/M
  segments whose lowest predicted ``jawOpen`` is at most 0.1 (lips can meet);
- ``vowel_jaw``: mean predicted ``jawOpen`` on vowel frames; ``silence_jaw``: on frames inside
  pauses longer than 300 ms (100 ms from the edges).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.data.types import AlignedUtterance
from avatar.motion.channels import BLENDSHAPE_INDEX, VISEME_INDEX
from avatar.motion.phonemes import VOWELS
from avatar.motion.stream import MotionStreamer
from avatar.motion.targets import ArticSegment, motion_targets, segments_of

JAW = BLENDSHAPE_INDEX["jawOpen"]
PP = VISEME_INDEX["PP"]
SIL = VISEME_INDEX["sil"]


@dataclass(slots=True)
class EvalResult:
    name: str
    utterances: int
    seconds: float
    jaw_r: float
    energy_r: float
    viseme_acc: float
    viseme_acc_speech: float
    pbm_jaw: float
    pbm_closed: float
    vowel_jaw: float
    silence_jaw: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class _Frames:
    jaw_pred: np.ndarray
    jaw_true: np.ndarray
    vis_pred: np.ndarray
    vis_true: np.ndarray
    energy: np.ndarray
    vowel: np.ndarray
    silence: np.ndarray
    pbm_min: list[float]


def predict(
    backend: InferenceBackend, audio: np.ndarray, fps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``audio`` (model rate) through the backend: blendshapes (F, nb), visemes (F, nv)."""
    streamer = MotionStreamer(backend, fps)
    frames = []
    for k in range(0, len(audio), 16000):
        frames.extend(streamer.push(audio[k : k + 16000]))
    frames.extend(streamer.flush())
    if not frames:
        return np.zeros((0, 16), np.float32), np.zeros((0, 15), np.float32)
    return np.stack([f.blendshapes for f in frames]), np.stack([f.visemes for f in frames])


def log_energy(audio: np.ndarray, rate: int, times: np.ndarray, win_s: float = 0.04) -> np.ndarray:
    """Log RMS of a window centred on each time (the loudness baseline)."""
    half = int(win_s * rate / 2)
    csum = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    c = np.round(times * rate).astype(int)
    lo, hi = np.clip(c - half, 0, len(audio)), np.clip(c + half, 0, len(audio))
    power = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return np.log10(power + 1e-8)


def _long_silence(segs: list[ArticSegment], t: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(t), bool)
    for s in segs:
        if s.viseme == "sil" and s.end - s.start > 0.3:
            mask |= (t > s.start + 0.1) & (t < s.end - 0.1)
    return mask


def segment_index(segs: list[ArticSegment], t: np.ndarray) -> np.ndarray:
    """Index of the segment each time falls in (the first/last outside them); needs segments."""
    starts = np.array([s.start for s in segs])
    return np.clip(np.searchsorted(starts, t, side="right") - 1, 0, max(len(segs) - 1, 0))


def pbm_minima(segs: list[ArticSegment], t: np.ndarray, jaw: np.ndarray) -> list[float]:
    out = []
    for s in segs:
        if s.viseme == "PP":
            inside = (t >= s.start) & (t <= s.end)
            if inside.any():
                out.append(float(jaw[inside].min()))
    return out


def _utterance_frames(backend: InferenceBackend, utt: AlignedUtterance, fps: float) -> _Frames:
    bs, vis = predict(backend, utt.audio, fps)
    t = np.arange(len(bs)) / fps
    bs_true, vis_true = motion_targets(utt.phones, t)
    segs = segments_of(utt.phones)
    idx = segment_index(segs, t)
    vowel = np.array([segs[k].symbol in VOWELS for k in idx]) if segs else np.zeros(len(t), bool)
    return _Frames(
        jaw_pred=bs[:, JAW],
        jaw_true=bs_true[:, JAW],
        vis_pred=vis.argmax(-1),
        vis_true=vis_true,
        energy=log_energy(utt.audio, utt.sample_rate, t),
        vowel=vowel,
        silence=_long_silence(segs, t),
        pbm_min=pbm_minima(segs, t, bs[:, JAW]),
    )


def corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def evaluate(
    backend: InferenceBackend, utts: list[AlignedUtterance], name: str, fps: float = 25.0
) -> EvalResult:
    """Metrics of ``backend`` on ``utts`` (16 kHz audio with phone alignments)."""
    parts = [_utterance_frames(backend, u, fps) for u in utts]

    def cat(attr: str) -> np.ndarray:
        return np.concatenate([getattr(p, attr) for p in parts])

    jaw_pred, jaw_true = cat("jaw_pred"), cat("jaw_true")
    vis_pred, vis_true = cat("vis_pred"), cat("vis_true")
    speech = vis_true != SIL
    pbm = np.array([m for p in parts for m in p.pbm_min])
    return EvalResult(
        name=name,
        utterances=len(utts),
        seconds=float(sum(u.duration for u in utts)),
        jaw_r=corr(jaw_pred, jaw_true),
        energy_r=corr(cat("energy"), jaw_true),
        viseme_acc=_mean(vis_pred == vis_true),
        viseme_acc_speech=_mean(vis_pred[speech] == vis_true[speech]),
        pbm_jaw=_mean(jaw_pred[vis_true == PP]),
        pbm_closed=_mean(pbm <= 0.1),
        vowel_jaw=_mean(jaw_pred[cat("vowel")]),
        silence_jaw=_mean(jaw_pred[cat("silence")]),
    )
