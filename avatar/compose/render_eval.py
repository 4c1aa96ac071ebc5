"""Judge a renderer from its output pixels: does the rendered mouth follow the speech?

Each utterance goes through the engine exactly as ``avatar render`` runs it (audio front, speech
gate, motion model, idle blinks and head motion, renderer:
:func:`~avatar.compose.offline.speech_frames`); face mesh then reads every rendered frame back,
and the inner-lip gap (in inter-ocular units) is compared with the openness derived from the
utterance's phone alignment:

- ``gap_r``: Pearson correlation of the measured gap with the alignment's ``jawOpen`` target;
- ``model_r``: the same for the motion model's own ``jawOpen`` (what the renderer had to show);
- ``pbm_closed``: share of P/B/M segments where the lips are seen closed (gap <= ``CLOSED_GAP``)
  in at least one frame; ``pbm_gap``: the mean of each segment's smallest gap; ``vowel_gap``,
  ``silence_gap``: mean gaps on vowel and pause frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.compose.offline import speech_frames
from avatar.config import Config
from avatar.data.types import AlignedUtterance
from avatar.face import mesh
from avatar.motion.phonemes import VOWELS
from avatar.motion.targets import motion_targets, openness, segments_of
from avatar.render.base import Renderer
from avatar.train.evaluate import corr, pbm_minima, segment_index

CLOSED_GAP = 0.02  # inter-ocular units: ~2.5 px on the 512 default avatar


@dataclass(slots=True)
class RenderEval:
    name: str
    renderer: str
    utterances: int
    frames: int
    face_found: float
    gap_r: float
    model_r: float
    pbm_closed: float
    pbm_gap: float
    vowel_gap: float
    silence_gap: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class UtteranceTrace:
    t: np.ndarray  # frame times (s)
    gap: np.ndarray  # measured inner-lip gap / inter-ocular (nan where no face)
    target: np.ndarray  # alignment-derived jawOpen
    model: np.ndarray  # the motion model's jawOpen
    pbm_min: list[float]
    vowel: np.ndarray
    silence: np.ndarray


def measure_gaps(images: list[np.ndarray], fm: mesh.FaceMesh) -> np.ndarray:
    gaps = np.full(len(images), np.nan, np.float32)
    for i, img in enumerate(images):
        faces = fm.detect(img)
        if faces:
            gaps[i] = mesh.inner_lip_gap(faces[0]) / mesh.interocular(faces[0])
    return gaps


def trace_utterance(
    cfg: Config, backend: InferenceBackend, renderer: Renderer, utt: AlignedUtterance
) -> UtteranceTrace:
    fps = cfg.motion.fps
    frames = speech_frames(cfg, utt.audio, utt.sample_rate, renderer, backend)
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        gaps = measure_gaps([f.image for f in frames], fm)
    t = np.arange(len(frames)) / fps
    target, _ = motion_targets(utt.phones, t)
    model = np.array([openness(f.motion.blendshapes) for f in frames if f.motion is not None])
    segs = segments_of(utt.phones)
    # frames where face mesh found no face never count as closed
    pbm_min = pbm_minima(segs, t, np.where(np.isnan(gaps), np.inf, gaps))
    idx = segment_index(segs, t)
    vowel = np.array([segs[k].symbol in VOWELS for k in idx]) if segs else np.zeros(len(t), bool)
    silence = np.array([segs[k].viseme == "sil" for k in idx]) if segs else np.ones(len(t), bool)
    return UtteranceTrace(t, gaps, openness(target), model, pbm_min, vowel, silence)


def _r(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the frames where both are known."""
    ok = np.isfinite(a) & np.isfinite(b)
    return corr(a[ok], b[ok])


def summarise(name: str, renderer: str, traces: list[UtteranceTrace]) -> RenderEval:
    def cat(attr: str) -> np.ndarray:
        return np.concatenate([getattr(tr, attr) for tr in traces])

    gap, target, model = cat("gap"), cat("target"), cat("model")
    pbm = np.array([m for tr in traces for m in tr.pbm_min])
    return RenderEval(
        name=name,
        renderer=renderer,
        utterances=len(traces),
        frames=len(gap),
        face_found=float(np.isfinite(gap).mean()),
        gap_r=_r(gap, target),
        model_r=_r(model, target),
        pbm_closed=float((pbm <= CLOSED_GAP).mean()) if len(pbm) else float("nan"),
        pbm_gap=float(np.mean(pbm)) if len(pbm) else float("nan"),
        vowel_gap=float(np.nanmean(gap[cat("vowel")])),
        silence_gap=float(np.nanmean(gap[cat("silence")])),
    )
