"""Measurements shared by ``measure_session.py`` and ``soak.py``: the microphone loop, the sync
marker, tone-burst and marker onsets, their pairing into A/V offsets and per-window summaries.

The loop is 10 s: 6 s of the bundled speech sample, then two 80 ms 1 kHz tone bursts in silence.
The server (``engine.sync_marker=true``) draws a white corner square on frames whose own audio is
loud; the A/V offset of a burst is the marked video frame arriving minus the burst's onset
arriving in the returned audio (client clock; positive = video later). Frames are 40 ms, so
single offsets are quantized; means and slopes are not.

Onsets are found incrementally (``AudioOnsets``/``VideoOnsets`` take frames in pieces), so a long
run can drop received frames once they are counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avatar.audio.io import iter_audio
from avatar.engine.render import MARKER_PX
from avatar.units import OUTPUT_RATE

ROOT = Path(__file__).resolve().parents[1]
RATE = OUTPUT_RATE
LOOP_S = 10


def mic_loop() -> np.ndarray:
    speech = np.concatenate(list(iter_audio(ROOT / "avatar/assets/sample.ogg", rate=RATE)))
    t = np.arange(round(0.08 * RATE)) / RATE
    burst = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    gap = np.zeros(round(0.96 * RATE), np.float32)  # bursts start on the 40 ms frame grid
    loop = np.concatenate([speech[: 6 * RATE], gap, burst, gap, burst, gap])
    return np.concatenate([loop, np.zeros(LOOP_S * RATE - len(loop), np.float32)])


def marker(rgb: np.ndarray) -> bool:
    return bool(rgb[2 : MARKER_PX - 2, 2 : MARKER_PX - 2].mean() > 200)


class AudioOnsets:
    """Arrival-clock seconds at which each tone burst starts in the returned audio (a burst is
    loud after >= 0.5 s of quiet; the speech part is excluded by requiring a pure 1 kHz tone)."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self._quiet_since = 0.0

    def feed(self, audio: Iterable[tuple[int, int, np.ndarray]]) -> None:
        for arrival, _, x in audio:
            t_end = arrival / 1e9
            loud = np.flatnonzero(np.abs(x) > 0.1)
            if len(loud) and t_end - self._quiet_since > 0.5 and _is_tone(x[loud[0] :]):
                self.onsets.append(t_end - (len(x) - loud[0]) / RATE)
            if np.abs(x).max() > 0.02:
                self._quiet_since = t_end


class VideoOnsets:
    """Arrival-clock seconds of each video frame that starts a run of marked frames."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self._prev = False

    def feed(self, video: Iterable[tuple[int, int, Any]]) -> None:
        for arrival, _, on in video:
            if on and not self._prev:
                self.onsets.append(arrival / 1e9)
            self._prev = bool(on)


def audio_onsets(audio: list[tuple[int, int, np.ndarray]]) -> list[float]:
    found = AudioOnsets()
    found.feed(audio)
    return found.onsets


def _is_tone(x: np.ndarray) -> bool:
    if len(x) < 96:
        return True
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = np.fft.rfftfreq(len(x), 1 / RATE)[int(spec.argmax())]
    return abs(peak - 1000) < 150


def video_onsets(video: list[tuple[int, int, Any]]) -> list[float]:
    found = VideoOnsets()
    found.feed(video)
    return found.onsets


def pair(audio_on: Sequence[float], video_on: Sequence[float]) -> list[tuple[float, float]]:
    """(audio onset, video - audio) for each burst seen in both (nearest within 0.5 s)."""
    out = []
    v = np.array(video_on)
    for a in audio_on:
        if len(v) == 0:
            break
        k = int(np.abs(v - a).argmin())
        if abs(v[k] - a) < 0.5:
            out.append((a, float(v[k] - a)))
    return out


def window_summary(
    stats: Sequence[dict[str, Any]], offsets_ms: Sequence[float], frames: int, seconds: float
) -> dict[str, Any]:
    """One window of a session: server latency from its ``stats`` messages (median of the
    per-message p50s, max of the p95s), A/V offsets of its bursts, received video fps."""
    p50 = [s["latency_ms"]["p50"] for s in stats if s["latency_ms"]["p50"]]
    p95 = [s["latency_ms"]["p95"] for s in stats if s["latency_ms"]["p95"]]
    off = list(offsets_ms)
    return {
        "server_latency_p50_ms": round(float(np.median(p50)), 1) if p50 else None,
        "server_latency_p95_ms": round(float(np.max(p95)), 1) if p95 else None,
        "av_offset_mean_ms": round(float(np.mean(off)), 1) if off else None,
        "av_offset_min_max_ms": [round(min(off), 1), round(max(off), 1)] if off else None,
        "bursts": len(off),
        "received_fps": round(frames / seconds, 2),
    }


def offset_totals(offsets: Sequence[tuple[float, float]], start: float) -> dict[str, Any]:
    """Mean, sd and drift (least-squares slope, ms per minute since ``start``) of a session's
    A/V offsets; ``offsets`` as ``pair`` returns them (seconds)."""
    a = np.array([x for x, _ in offsets])
    o = np.array([y for _, y in offsets]) * 1000
    slope = float(np.polyfit((a - start) / 60, o, 1)[0]) if len(a) > 2 else float("nan")
    mean, sd = (float(o.mean()), float(o.std())) if len(o) else (float("nan"), float("nan"))
    return {"mean": round(mean, 1), "sd": round(sd, 1), "drift_ms_per_min": round(slope, 2),
            "bursts": len(o)}  # fmt: skip
