"""A long live session against a real ``avatar serve``: server latency and A/V offset over time.

    python scripts/measure_session.py --minutes 5 [--out docs/session_5min.json]

The server runs in its own process (``avatar serve --ice-host 127.0.0.1``, sync marker on); this
process is an aiortc client peer that sends a 10 s loop as its microphone: 6 s of the bundled
speech sample, then two 80 ms tone bursts in silence. It prints, per minute:

- server latency (engine clock: an audio sample received -> the frame carrying it handed to the
  encoder, measured on each frame's oldest sample) from the per-second stats messages;
- A/V offset of the returned tracks at the client: the video frame carrying the server's sync
  marker (drawn on frames whose own audio is loud) arriving, minus the tone burst's onset arriving
  in the returned audio (arrival times on this process's clock; positive = video later). Its
  slope over the session is the drift. Resolution: frames are 40 ms, so single offsets are
  quantized; the mean and the slope are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from avatar.audio.io import iter_audio
from avatar.config import ServerConfig
from avatar.engine.render import MARKER_PX
from avatar.server.aiortc_hooks import configure_ice
from avatar.server.browser import serve_process
from avatar.server.client import AvatarPeer
from avatar.units import OUTPUT_RATE

ROOT = Path(__file__).resolve().parents[1]
RATE = OUTPUT_RATE


def mic_loop() -> np.ndarray:
    speech = np.concatenate(list(iter_audio(ROOT / "avatar/assets/sample.ogg", rate=RATE)))
    t = np.arange(round(0.08 * RATE)) / RATE
    burst = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    gap = np.zeros(round(0.96 * RATE), np.float32)  # bursts start on the 40 ms frame grid
    loop = np.concatenate([speech[: 6 * RATE], gap, burst, gap, burst, gap])
    return np.concatenate([loop, np.zeros(10 * RATE - len(loop), np.float32)])


def marker(rgb: np.ndarray) -> bool:
    return bool(rgb[2 : MARKER_PX - 2, 2 : MARKER_PX - 2].mean() > 200)


def audio_onsets(audio: list[tuple[int, int, np.ndarray]]) -> list[float]:
    """Arrival-clock seconds at which each tone burst starts in the returned audio (a burst is
    loud after >= 0.5 s of quiet; the speech part is excluded by requiring a pure 1 kHz tone)."""
    onsets, quiet_since = [], 0.0
    for arrival, _, x in audio:
        t_end = arrival / 1e9
        loud = np.flatnonzero(np.abs(x) > 0.1)
        if len(loud) and t_end - quiet_since > 0.5 and _is_tone(x[loud[0] :]):
            onsets.append(t_end - (len(x) - loud[0]) / RATE)
        if np.abs(x).max() > 0.02:
            quiet_since = t_end
    return onsets


def _is_tone(x: np.ndarray) -> bool:
    if len(x) < 96:
        return True
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak = np.fft.rfftfreq(len(x), 1 / RATE)[int(spec.argmax())]
    return abs(peak - 1000) < 150


def video_onsets(video: list[tuple[int, int, Any]]) -> list[float]:
    onsets, prev = [], False
    for arrival, _, on in video:
        if on and not prev:
            onsets.append(arrival / 1e9)
        prev = on
    return onsets


def pair(audio_on: list[float], video_on: list[float]) -> list[tuple[float, float]]:
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


async def session(url: str, minutes: float) -> tuple[AvatarPeer, float]:
    loop = mic_loop()
    audio = np.tile(loop, int(np.ceil(minutes * 6)) + 1)
    peer = AvatarPeer(url, audio, summarize=marker)
    await peer.connect()
    await asyncio.sleep(minutes * 60)
    assert peer.speech is not None
    start = peer.speech.send_times[0] / 1e9
    await peer.close()
    return peer, start


def summarize(peer: AvatarPeer, start: float, minutes: float) -> dict[str, Any]:
    stats = [m for m in peer.received.messages if m.get("type") == "stats"]
    offsets = pair(audio_onsets(peer.received.audio), video_onsets(peer.received.video))
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        lo, hi = start + 60 * m, start + 60 * (m + 1)
        p50 = [
            s["latency_ms"]["p50"] for s in stats[60 * m : 60 * (m + 1)] if s["latency_ms"]["p50"]
        ]
        p95 = [
            s["latency_ms"]["p95"] for s in stats[60 * m : 60 * (m + 1)] if s["latency_ms"]["p95"]
        ]
        off = [o * 1000 for a, o in offsets if lo <= a < hi]
        vid = [v for v in peer.received.video if lo <= v[0] / 1e9 < hi]
        per_minute.append({
            "minute": m + 1,
            "server_latency_p50_ms": round(float(np.median(p50)), 1) if p50 else None,
            "server_latency_p95_ms": round(float(np.max(p95)), 1) if p95 else None,
            "av_offset_mean_ms": round(float(np.mean(off)), 1) if off else None,
            "av_offset_min_max_ms": [round(min(off), 1), round(max(off), 1)] if off else None,
            "bursts": len(off),
            "received_fps": round(len(vid) / 60, 2),
        })  # fmt: skip
    a = np.array([x for x, _ in offsets])
    o = np.array([y for _, y in offsets]) * 1000
    slope = float(np.polyfit((a - start) / 60, o, 1)[0]) if len(a) > 2 else float("nan")
    last = stats[-1] if stats else {}
    return {
        "minutes": minutes,
        "per_minute": per_minute,
        "av_offset_ms": {"mean": round(float(o.mean()), 1), "sd": round(float(o.std()), 1),
                         "drift_ms_per_min": round(slope, 2), "bursts": len(o)},
        "final_counters": {k: last.get(k) for k in ("frames", "late", "skipped", "idle")},
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # this client offers loopback too
    with serve_process("--set", "engine.sync_marker=true") as url:
        peer, start = asyncio.run(session(url, args.minutes))
    result = summarize(peer, start, args.minutes)
    print(f"{'min':>3} {'srv p50':>8} {'srv p95':>8} {'A/V mean':>9} {'A/V range':>14} {'fps':>6}")
    for r in result["per_minute"]:
        rng = r["av_offset_min_max_ms"] or ["-", "-"]
        lat = f"{r['server_latency_p50_ms']!s:>8} {r['server_latency_p95_ms']!s:>8}"
        av = f"{r['av_offset_mean_ms']!s:>9} {f'{rng[0]}..{rng[1]}':>14}"
        print(f"{r['minute']:>3} {lat} {av} {r['received_fps']:>6}")
    total = result["av_offset_ms"]
    print(
        f"A/V offset over {total['bursts']} bursts: mean {total['mean']} ms, sd {total['sd']} ms, "
        f"drift {total['drift_ms_per_min']} ms/min; counters {result['final_counters']}"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
