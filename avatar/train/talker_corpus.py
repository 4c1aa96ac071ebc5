"""Real talkers as training data: videos of people talking with their own sound, read with face
mesh, become log-mel frames paired with how far the person's mouth is open.

The synthetic corpus teaches the motion model phones' poses from alignments; these clips teach
its jaw what real mouths do with real voices. For each clip, every 10 ms mel frame gets a
``jawOpen`` target: the talker's mouth opening (face mesh, 13-14 over 78-308) turned into the
model's units by :func:`~avatar.data.talkers.jaw_for_opening` (the curve every avatar is
calibrated to, so what the model learns is what the faces show) and read
:data:`~avatar.data.talkers.TALKER_LEAD_S` *earlier* than the frame: a talker's mouth leads its
sound, the model's targets sit on the sound (the engine adds the lead back for buffered input).
Each speaker's openings are scaled so their p90 over voiced frames is the talkers' median
(:data:`VOICED_P90`): how wide one person opens is theirs, when is what the model learns.

Shards: ``<out>/talkers-XXXX.npz`` with ``mel`` (N, n_mels) float16, ``jaw`` (N,) float16 and
``valid`` (N,) bool (a face was found around that time).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.audio.features import log_mel
from avatar.audio.io import load_audio
from avatar.config import FeatureConfig
from avatar.data.talkers import (
    TALKER_LEAD_S,
    TARGET_SLOPE,
    TARGET_START,
    jaw_for_opening,
    video_mouth,
    voiced_at,
)

VOICED_P90 = 0.29  # the opening's p90 over voiced frames, median of 20 real talkers
SHARD_FRAMES = 200_000


@dataclass(frozen=True, slots=True)
class TalkerVideo:
    """One training clip and whose face and voice it is."""

    path: Path
    speaker: str


@dataclass(slots=True)
class TalkerFrames:
    mel: np.ndarray  # (N, n_mels) float16
    jaw: np.ndarray  # (N,) float16
    valid: np.ndarray  # (N,) bool


Mouth = tuple[np.ndarray, np.ndarray]  # (frame times, opening) of a video


def clip_frames(video: TalkerVideo, mouth: Mouth, cfg: FeatureConfig, scale: float) -> TalkerFrames:
    """Mel frames of the clip's sound and the jaw its face shows (``scale``: the speaker's)."""
    audio = load_audio(video.path, cfg.sample_rate)
    mel = log_mel(audio, cfg)
    times, opening = mouth
    at = (np.arange(len(mel)) + 1) * cfg.hop / cfg.sample_rate - TALKER_LEAD_S  # frame ends
    ok = np.isfinite(opening)
    seen = np.interp(at, times[ok], opening[ok]) if ok.sum() > 1 else np.zeros(len(at))
    nearest = np.clip(np.searchsorted(times, at), 0, len(times) - 1)
    valid = (at >= times[0]) & (at <= times[-1]) & ok[nearest]
    jaw = jaw_for_opening(seen * scale)
    return TalkerFrames(mel.astype(np.float16), jaw.astype(np.float16), valid)


def speaker_scales(videos: list[TalkerVideo], mouths: list[Mouth]) -> dict[str, float]:
    """Per speaker: the factor that brings their voiced-frame opening p90 to VOICED_P90."""
    openings: dict[str, list[np.ndarray]] = defaultdict(list)
    for v, (times, opening) in zip(videos, mouths, strict=True):
        audio = load_audio(v.path, 16000)
        openings[v.speaker].append(opening[voiced_at(audio, 16000, times) & np.isfinite(opening)])
    out = {}
    for speaker, parts in openings.items():
        p90 = float(np.percentile(np.concatenate(parts), 90)) if parts else 0.0
        out[speaker] = VOICED_P90 / p90 if p90 > 0.02 else 1.0
    return out


def build_talker_corpus(
    videos: list[TalkerVideo], out_dir: Path, cfg: FeatureConfig
) -> dict[str, object]:
    """Write the shards (see the module docstring); returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mouths = [video_mouth(v.path) for v in videos]
    scales = speaker_scales(videos, mouths)
    parts: list[TalkerFrames] = []
    shards, frames = 0, 0

    def flush() -> None:
        nonlocal shards, parts
        if parts:
            np.savez(out_dir / f"talkers-{shards:04d}.npz",
                     mel=np.concatenate([p.mel for p in parts]),
                     jaw=np.concatenate([p.jaw for p in parts]),
                     valid=np.concatenate([p.valid for p in parts]))  # fmt: skip
            shards, parts = shards + 1, []

    for v, mouth in zip(videos, mouths, strict=True):
        parts.append(clip_frames(v, mouth, cfg, scales[v.speaker]))
        frames += len(parts[-1].mel)
        if sum(len(p.mel) for p in parts) >= SHARD_FRAMES:
            flush()
    flush()
    info = {"clips": len(videos), "frames": frames, "shards": shards, "scales": scales,
            "lead_s": TALKER_LEAD_S, "target_slope": TARGET_SLOPE,
            "target_start": TARGET_START}  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(info, indent=1))
    return info


def load_talker_corpus(folder: Path) -> TalkerFrames:
    files = sorted(folder.glob("talkers-*.npz"))
    if not files:
        raise FileNotFoundError(f"no talker shards in {folder}; build them first")
    parts = [np.load(f) for f in files]
    return TalkerFrames(*(np.concatenate([p[k] for p in parts]) for k in ("mel", "jaw", "valid")))
