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
  ``silence_gap``: mean gaps on vowel and pause frames;
- ``open_p50``, ``open_p90``: percentiles over all frames of the mouth opening (inner-lip gap
  13-14 over inner mouth width 78-308: :func:`~avatar.face.mesh.mouth_opening`), to compare with a
  real talker (carphone: 0.19 and 0.76); ``speech_open_p50``/``_p90``: the same over the frames
  the alignment calls speech (the human clips are one word each, and over half their frames are
  silence, which pins the all-frames median near 0; the carphone figures are continuous speech);
- ``chin_travel``: 95th minus 5th percentile of the chin length
  (:func:`~avatar.face.mesh.chin_length`; carphone, whose head also moves: 0.285).
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
    open_p50: float
    open_p90: float
    speech_open_p50: float
    speech_open_p90: float
    chin_travel: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(slots=True)
class MouthMeasures:
    """What face mesh reads back from each rendered frame (nan where it found no face)."""

    gap: np.ndarray  # inner-lip gap / inter-ocular (eye centres)
    opening: np.ndarray  # inner-lip gap 13-14 / inner mouth width 78-308
    chin: np.ndarray  # chin 152 to nose bridge 168 / outer-eye distance 33-263


@dataclass(slots=True)
class UtteranceTrace:
    t: np.ndarray  # frame times (s)
    gap: np.ndarray  # measured inner-lip gap / inter-ocular (nan where no face)
    opening: np.ndarray  # measured inner-lip gap / mouth width (nan where no face)
    chin: np.ndarray  # measured chin length (nan where no face)
    target: np.ndarray  # alignment-derived jawOpen
    model: np.ndarray  # the motion model's jawOpen
    pbm_min: list[float]
    vowel: np.ndarray
    silence: np.ndarray


def face_measures(lm: np.ndarray) -> tuple[float, float, float]:
    """(gap, opening, chin) of one face's landmarks, as in :class:`MouthMeasures`."""
    gap = mesh.inner_lip_gap(lm) / mesh.interocular(lm)
    return gap, mesh.mouth_opening(lm), mesh.chin_length(lm)


def measure_mouths(images: list[np.ndarray], fm: mesh.FaceMesh) -> MouthMeasures:
    values = np.full((3, len(images)), np.nan, np.float32)
    for i, img in enumerate(images):
        faces = fm.detect(img)
        if faces:
            values[:, i] = face_measures(faces[0])
    return MouthMeasures(*values)


def trace_utterance(
    cfg: Config, backend: InferenceBackend, renderer: Renderer, utt: AlignedUtterance
) -> UtteranceTrace:
    """Render ``utt`` through the engine, read every frame back, trace it against its phones
    (with the mouth's lead of buffered input, the engine's ``lead_ms``)."""
    frames = speech_frames(cfg, utt.audio, utt.sample_rate, renderer, backend)
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        measured = measure_mouths([f.image for f in frames], fm)
    model = np.array([openness(f.motion.blendshapes) for f in frames if f.motion is not None])
    return trace_measured(utt, cfg.motion.fps, measured, model, cfg.engine.lead_ms / 1000)


def trace_measured(
    utt: AlignedUtterance, fps: float, measured: MouthMeasures, model: np.ndarray,
    lead_s: float = 0.0,
) -> UtteranceTrace:  # fmt: skip
    """One utterance's measured frames against its alignment. The alignment's openness is
    read ``lead_s`` later than each frame: a real talker's mouth runs ahead of the phones'
    acoustic times, and a mouth that leads by ``lead_s`` is compared with where it leads to.
    Closures and pauses are judged on the frames that show them (the same shift)."""
    gaps = measured.gap
    t = np.arange(len(gaps)) / fps
    shown = t + lead_s  # the audio time each frame shows
    target, _ = motion_targets(utt.phones, shown)
    segs = segments_of(utt.phones)
    # frames where face mesh found no face never count as closed
    pbm_min = pbm_minima(segs, shown, np.where(np.isnan(gaps), np.inf, gaps))
    idx = segment_index(segs, shown)
    vowel = np.array([segs[k].symbol in VOWELS for k in idx]) if segs else np.zeros(len(t), bool)
    silence = np.array([segs[k].viseme == "sil" for k in idx]) if segs else np.ones(len(t), bool)
    return UtteranceTrace(
        t, gaps, measured.opening, measured.chin, openness(target), model, pbm_min, vowel, silence
    )


def _r(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the frames where both are known."""
    ok = np.isfinite(a) & np.isfinite(b)
    return corr(a[ok], b[ok])


def _percentile(a: np.ndarray, q: float) -> float:
    """Percentile over the known values; nan when there are none."""
    known = a[np.isfinite(a)]
    return float(np.percentile(known, q)) if len(known) else float("nan")


def _mean(a: np.ndarray) -> float:
    known = a[np.isfinite(a)]
    return float(known.mean()) if len(known) else float("nan")


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
        vowel_gap=_mean(gap[cat("vowel")]),
        silence_gap=_mean(gap[cat("silence")]),
        open_p50=_percentile(cat("opening"), 50),
        open_p90=_percentile(cat("opening"), 90),
        speech_open_p50=_percentile(cat("opening")[~cat("silence")], 50),
        speech_open_p90=_percentile(cat("opening")[~cat("silence")], 90),
        chin_travel=_percentile(cat("chin"), 95) - _percentile(cat("chin"), 5),
    )
