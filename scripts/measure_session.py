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
from session_metrics import (
    audio_onsets,
    marker,
    mic_loop,
    offset_totals,
    pair,
    video_onsets,
    window_summary,
)

from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.testing.browser import serve_process
from avatar.testing.peer import AvatarPeer


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
        off = [o * 1000 for a, o in offsets if lo <= a < hi]
        vid = [v for v in peer.received.video if lo <= v[0] / 1e9 < hi]
        window = window_summary(stats[60 * m : 60 * (m + 1)], off, len(vid), 60)
        per_minute.append({"minute": m + 1, **window})
    last = stats[-1] if stats else {}
    return {
        "minutes": minutes,
        "per_minute": per_minute,
        "av_offset_ms": offset_totals(offsets, start),
        "final_counters": {k: last.get(k) for k in ("frames", "late", "skipped", "idle")},
    }


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
