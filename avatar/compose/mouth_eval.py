"""The mouth evaluation: real talkers, read sentences and isolated words, on several faces.

Three tables, one measuring code (face mesh on rendered frames, :mod:`scripts/mouth_traces.py`
renders and reads them, so an older checkout can be judged the same way):

- **real talkers** (:mod:`avatar.compose.talker_eval`): people talking in videos with their own
  sound; the avatar says the same sound and its mouth is compared with theirs frame by frame
  (correlation at the best lag, the lag, the opening's p90 over voiced frames);
- **sentences**: read sentences (LJSpeech, JFK, speechbrain's test speakers) against their
  pocketsphinx alignment (:mod:`avatar.compose.render_eval`);
- **isolated words**: the Debian recordings (letter, object and channel names), the same way.

Each face runs in two modes: ``buffered`` (a file, text-to-speech, agent audio: the mouth leads its
sound by ``engine.lead_ms``) and ``live`` (a microphone: no lead, every ms of it would be latency).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.compose.faces import hopper_avatar, video_portrait
from avatar.compose.render_eval import MouthMeasures, RenderEval, summarise, trace_measured
from avatar.compose.talker_eval import TalkerResult, TalkerTrace
from avatar.compose.talker_eval import summarise as summarise_talkers
from avatar.data.media import TALKER_CLIPS, media_path
from avatar.data.talkers import TALKER_LEAD_S, TalkerClip, load_talker, voiced_at
from avatar.data.types import AlignedUtterance


@dataclass(frozen=True, slots=True)
class Face:
    """A face to render: a bundled avatar, a prepared photo or a frame of a talking video."""

    name: str
    avatar: str  # a bundled avatar's name, "hopper", or "video:<talker clip name>"
    renderer: str = "warp"
    size: int = 512
    kind: str = ""  # what the face is, for the tables


FACES: tuple[Face, ...] = (
    Face("default", "default", kind="astronaut photo, smiling with teeth"),
    Face("hopper", "hopper", kind="Grace Hopper photo, closed mouth, older"),
    Face("carphone", "carphone", size=256, kind="video frame, closed mouth"),
    Face("carphone-gan", "carphone", "gan", 256, kind="the same, GAN renderer"),
    Face("retalk2", "video:talker/retalk-2", kind="video frame, man"),
    Face("retalk3", "video:talker/retalk-3", kind="video frame, woman, lips pursed"),
    Face("retalk5", "video:talker/retalk-5", kind="video frame, older woman, glasses"),
    Face("farah", "video:talker/pcavs-620900105", kind="video frame, dark skin, head turned"),
    Face("stewart", "video:talker/pcavs-00473", kind="video frame, older man, slight smile"),
)
FACE_BY_NAME = {f.name: f for f in FACES}


def avatar_spec(face: Face, faces_dir: Path, media_dir: Path) -> str:
    """What ``render.avatar`` gets for ``face`` (photos and video frames prepared once)."""
    if face.avatar == "hopper":
        return hopper_avatar(faces_dir)
    if face.avatar.startswith("video:"):
        item = next(c for c in TALKER_CLIPS if c.name == face.avatar.removeprefix("video:"))
        return video_portrait(media_path(item, media_dir), f"video-{face.name}", faces_dir)
    return face.avatar


def talker_clips(split: str, media_dir: Path) -> list[TalkerClip]:
    items = [c for c in TALKER_CLIPS if split in ("all", c.split)]
    return [load_talker(media_path(c, media_dir), c.name, c.split) for c in items]


def measures(data: dict[str, np.ndarray]) -> MouthMeasures:
    """A worker's per-frame face-mesh readings (``scripts/mouth_traces.py``)."""
    return MouthMeasures(data["gap"], data["opening"], data["chin"])


def talker_result(name: str, clips: list[TalkerClip], traces: dict[str, dict[str, np.ndarray]],
                  fps: float) -> TalkerResult:  # fmt: skip
    """The real-talker table's row for one face and mode from the worker's readings."""
    out = []
    for clip in clips:
        data = traces[clip.name]
        t = np.arange(len(data["opening"])) / fps
        voiced = voiced_at(clip.audio, clip.sample_rate, clip.times)
        out.append(TalkerTrace(clip.name, clip.times, clip.opening, t, data["opening"],
                               data["jaw"], voiced))  # fmt: skip
    return summarise_talkers(name, out)


@dataclass(slots=True)
class AlignedResult:
    """A row of the sentence or word table. ``own``: closures, pauses and openings judged on the
    frames that show them (the mouth's own lead); the correlation against the alignment's
    openness where a real talker shows it (``talker``: read :data:`TALKER_LEAD_S` later) and
    where the phones sound (``acoustic``)."""

    own: RenderEval
    talker: RenderEval
    acoustic: RenderEval


def aligned_result(name: str, utts: list[AlignedUtterance],
                   traces: dict[str, dict[str, np.ndarray]], fps: float,
                   lead_s: float) -> AlignedResult:  # fmt: skip
    def run(lead: float) -> RenderEval:
        rows = [trace_measured(u, fps, measures(traces[u.source]), traces[u.source]["jaw"], lead)
                for u in utts]  # fmt: skip
        return summarise(name, "", rows)

    return AlignedResult(run(lead_s), run(TALKER_LEAD_S), run(0.0))
