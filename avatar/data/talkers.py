"""Real talkers: videos of people speaking with their own sound, read with face mesh.

Each clip gives its audio (mono float32 at the file's rate) and, for every video frame, the
frame's time and the talker's mouth opening (inner-lip gap 13-14 over inner mouth width 78-308,
:func:`~avatar.face.mesh.mouth_opening`; nan where face mesh finds no face). The best reference for
a rendered mouth is a real person's mouth saying the same thing: the evaluation renders the avatar
from the clip's own audio and compares the two openings frame by frame.

Face mesh runs in tracking mode over the whole clip once; the result is cached as ``.npz`` next to
the other evaluation caches (keyed by the file's size and mtime and :data:`READER_VERSION`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import webrtcvad

from avatar.audio.io import load_audio
from avatar.data.align import resample_pcm16
from avatar.errors import AudioInputError
from avatar.face import mesh
from avatar.units import OUTPUT_RATE

READER_VERSION = "1"
# What real talkers' mouths do against the motion model's conventions (measured on 20 clips of
# real people talking with their own sound, avatar/compose/talker_eval.py):
TALKER_LEAD_S = 0.06  # their mouths lead a motion placed on the phones' acoustic times
# The opening every avatar shows at the shipped motion model's jawOpen (face mesh's 13-14 over
# 78-308; `avatar prepare` calibrates each face to it): OPENING_SLOPE x (jawOpen - OPENING_START),
# matched to the real talkers of the dev clips by quantiles (the model's jawOpen on their voiced
# frames at p50 and p95 against their opening there; scripts/eval_mouth.py measures the result).
OPENING_SLOPE = 1.9
OPENING_START = 0.15
MAX_OPENING = 0.6  # real talkers' voiced frames open wider than this 1 % of the time (dev clips)
# A real talker's opening in the motion model's units, as the talker training shards were built
# (avatar/train/talker_corpus.py): the curve of the model the shards fine-tuned, frozen with them.
TARGET_SLOPE = 1.3
TARGET_START = 0.1
VAD_FRAME_S = 0.02
VAD_RATE = 16000


@dataclass(slots=True)
class TalkerClip:
    """One real talker: the clip's audio and the measured mouth per video frame."""

    name: str
    audio: np.ndarray  # (n,) float32 mono
    sample_rate: int
    times: np.ndarray  # (f,) seconds: each video frame's presentation time
    opening: np.ndarray  # (f,) the talker's mouth opening, nan where no face was found
    split: str = "dev"

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def canonical_opening(jaw: np.ndarray) -> np.ndarray:
    """The opening a face shows at the motion model's ``jawOpen`` (every avatar is calibrated to
    it; see :data:`OPENING_SLOPE`), no wider than real talkers open (:data:`MAX_OPENING`: a
    photo's face warped further than that breaks up at the mouth's corners)."""
    opening = OPENING_SLOPE * np.maximum(np.asarray(jaw, np.float64) - OPENING_START, 0.0)
    return np.minimum(opening, MAX_OPENING)


def jaw_for_opening(opening: np.ndarray) -> np.ndarray:
    """A real talker's ``opening`` as a jawOpen training target (:data:`TARGET_SLOPE`): closed
    lips 0.02, rising to the lips' parting at the first visible opening (0.03), then linear."""
    o = np.asarray(opening, np.float64)
    part = TARGET_START - 0.02
    return 0.02 + part * np.clip(o / 0.03, 0, 1) + np.maximum(o - 0.03, 0) / TARGET_SLOPE


def voiced_at(
    audio: np.ndarray, rate: int, times: np.ndarray, aggressiveness: int = 2
) -> np.ndarray:
    """Whether webrtcvad calls the 20 ms of sound at each time voiced."""
    pcm16 = resample_pcm16(audio, rate, VAD_RATE)
    n = int(VAD_RATE * VAD_FRAME_S)
    vad = webrtcvad.Vad(aggressiveness)
    flags = np.array(
        [vad.is_speech(pcm16[i : i + n].tobytes(), VAD_RATE) for i in range(0, len(pcm16) - n, n)]
    )
    k = np.clip((times / VAD_FRAME_S).astype(int), 0, max(len(flags) - 1, 0))
    return flags[k] if len(flags) else np.zeros(len(times), bool)


def video_mouth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times, opening) of every video frame of ``path`` (face mesh, tracking mode); times
    count from the start of the file's audio, so they are on the sound's clock."""
    times, opening = [], []
    with av.open(str(path)) as container, mesh.FaceMesh(max_faces=1, static=False) as fm:
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        origin = _start_s(audio) if audio is not None else _start_s(stream)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            times.append(float(frame.pts * (stream.time_base or 0)))
            faces = fm.detect(frame.to_ndarray(format="rgb24"))
            opening.append(mesh.mouth_opening(faces[0]) if faces else np.nan)
    return np.asarray(times, np.float64) - origin, np.asarray(opening, np.float32)


def _start_s(stream: av.stream.Stream) -> float:
    start = stream.start_time
    return float(start * stream.time_base) if start is not None and stream.time_base else 0.0


def _cache_file(path: Path, cache_dir: Path) -> Path:
    st = path.stat()
    return cache_dir / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}-v{READER_VERSION}.npz"


def load_talker(
    path: Path, name: str, split: str = "dev", cache_dir: Path | None = Path("data/talkers")
) -> TalkerClip:
    """A real talker clip from a video file with sound (the mouth read once, then cached).

    Frame times are on the audio's clock (see :func:`video_mouth`)."""
    cached = _cache_file(path, cache_dir) if cache_dir is not None else None
    if cached is not None and cached.exists():
        data = np.load(cached)
        times, opening = data["times"], data["opening"]
    else:
        times, opening = video_mouth(path)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, times=times, opening=opening)
    rate = OUTPUT_RATE
    audio = load_audio(path, rate)
    if len(audio) == 0:
        raise AudioInputError(f"{path}: the clip has no sound; a real talker needs its own")
    return TalkerClip(name, audio, rate, times, opening, split)
