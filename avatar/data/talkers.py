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

from avatar.audio.io import load_audio
from avatar.errors import AudioInputError
from avatar.face import mesh
from avatar.units import OUTPUT_RATE

READER_VERSION = "1"


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
