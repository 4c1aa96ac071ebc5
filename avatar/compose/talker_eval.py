"""Judge the rendered mouth against real talkers: the avatar says what a real person said, from
the person's own sound, and the two mouths are compared frame by frame.

For each clip (:class:`~avatar.data.talkers.TalkerClip`) the audio goes through the engine exactly
as ``avatar render`` runs it (:func:`~avatar.compose.offline.speech_frames`); face mesh reads the
rendered mouth's opening (inner-lip gap 13-14 over inner mouth width 78-308, the same measure as
the talker's). Then:

- ``r`` and ``lag_s``: Pearson correlation of the two openings at the lag that maximises it,
  searched over +-:data:`MAX_LAG_S` in :data:`LAG_STEP_S` steps (the avatar is sampled at the
  talker's frame times plus the lag, linearly interpolated). A positive lag means the avatar's
  mouth *trails* the real one; ``r0`` is the correlation at lag 0 (what a viewer sees);
- ``real_p90``, ``avatar_p90``: the opening's 90th percentile over voiced frames (webrtcvad on
  the clip's sound, :func:`~avatar.data.talkers.voiced_at`), and their ratio: does the avatar
  open as far as people do.

Clips are concatenated for the pooled numbers (each clip's lag is found on its own; the pooled
lag is the median of the clips').
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.compose.offline import speech_frames
from avatar.compose.render_eval import measure_mouths
from avatar.config import Config
from avatar.data.talkers import TalkerClip, voiced_at
from avatar.face import mesh
from avatar.motion.channels import BLENDSHAPE_INDEX
from avatar.render.base import Renderer
from avatar.train.evaluate import corr

MAX_LAG_S = 0.4
LAG_STEP_S = 0.01
JAW = BLENDSHAPE_INDEX["jawOpen"]


@dataclass(slots=True)
class TalkerTrace:
    """One clip: the real and the rendered opening on the talker's frame times."""

    name: str
    times: np.ndarray  # talker frame times (s)
    real: np.ndarray  # the talker's opening (nan: no face)
    avatar_t: np.ndarray  # rendered frame times (s)
    avatar: np.ndarray  # the avatar's opening (nan: no face)
    jaw: np.ndarray  # the motion model's jawOpen on the rendered frames (nan: idle)
    voiced: np.ndarray  # (len(times),) bool: the sound is voiced at that frame


@dataclass(slots=True)
class TalkerResult:
    name: str
    clips: int
    seconds: float
    r: float  # pooled, each clip at its own best lag
    r0: float  # pooled, no lag
    lag_s: float  # median of the clips' best lags (positive: the avatar trails)
    lags: list[float]
    clip_r: list[float]
    real_p90: float
    avatar_p90: float

    @property
    def p90_ratio(self) -> float:
        return self.avatar_p90 / self.real_p90 if self.real_p90 > 0 else float("nan")

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["p90_ratio"] = self.p90_ratio
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def sample_at(t: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values`` known at times ``t`` (nan = unknown) linearly interpolated at ``at``; nan
    outside ``t``'s range or next to an unknown value."""
    ok = np.isfinite(values)
    out = np.interp(at, t[ok], values[ok]) if ok.any() else np.full(len(at), np.nan)
    nearest = np.clip(np.searchsorted(t, at), 0, len(t) - 1)
    out[(at < t[0]) | (at > t[-1]) | ~ok[nearest]] = np.nan
    return out


def lagged(trace: TalkerTrace, lag_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(real, avatar) on the talker's frames, the avatar read ``lag_s`` later."""
    return trace.real, sample_at(trace.avatar_t, trace.avatar, trace.times + lag_s)


def best_lag(trace: TalkerTrace) -> tuple[float, float]:
    """(r, lag) at the lag that maximises the correlation."""
    best = (-2.0, 0.0)
    for lag in np.arange(-MAX_LAG_S, MAX_LAG_S + 1e-9, LAG_STEP_S):
        r = _r(*lagged(trace, float(lag)))
        if r > best[0]:
            best = (r, float(lag))
    return best


def _r(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return corr(a[ok], b[ok]) if ok.sum() > 2 else float("nan")


def trace_clip(
    cfg: Config, backend: InferenceBackend, renderer: Renderer, clip: TalkerClip
) -> TalkerTrace:
    frames = speech_frames(cfg, clip.audio, clip.sample_rate, renderer, backend)
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        measured = measure_mouths([f.image for f in frames], fm)
    avatar_t = np.arange(len(frames)) / cfg.motion.fps
    jaw = np.array([f.motion.blendshapes[JAW] if f.motion else np.nan for f in frames])
    voiced = voiced_at(clip.audio, clip.sample_rate, clip.times)
    return TalkerTrace(clip.name, clip.times, clip.opening, avatar_t, measured.opening, jaw, voiced)


def summarise(name: str, traces: list[TalkerTrace]) -> TalkerResult:
    found = [best_lag(tr) for tr in traces]
    at_best = [lagged(tr, lag) for tr, (_, lag) in zip(traces, found, strict=True)]
    at_zero = [lagged(tr, 0.0) for tr in traces]
    voiced = np.concatenate([tr.voiced for tr in traces])
    real = np.concatenate([a for a, _ in at_zero])
    avatar = np.concatenate([b for _, b in at_zero])
    return TalkerResult(
        name=name,
        clips=len(traces),
        seconds=float(sum(tr.avatar_t[-1] for tr in traces if len(tr.avatar_t))),
        r=_r(np.concatenate([a for a, _ in at_best]), np.concatenate([b for _, b in at_best])),
        r0=_r(real, avatar),
        lag_s=float(np.median([lag for _, lag in found])) if found else float("nan"),
        lags=[round(lag, 3) for _, lag in found],
        clip_r=[round(r, 3) for r, _ in found],
        real_p90=_p90(real[voiced]),
        avatar_p90=_p90(avatar[voiced]),
    )


def _p90(x: np.ndarray) -> float:
    known = x[np.isfinite(x)]
    return float(np.percentile(known, 90)) if len(known) else float("nan")
