"""Sessions held by one server process vs ``avatar serve --workers K``: late and skipped frames
per number of live sessions.

    python scripts/bench_workers.py [--workers 1,2] [--sessions 2,4,6] [--seconds 10] [--size 512]

For each K, ``avatar serve --workers K`` runs in a child process (loopback ICE); this process
opens N aiortc client peers (``AvatarPeer``), each streaming the bundled speech with pauses as
its microphone, for ``--seconds`` after a 2 s settling time, then closes them and goes on to the
next N on the same server. Per N it prints, over the measured window: the server's late and
skipped frames as a share of frames (from each session's ``stats`` messages), the video fps the
peers received (mean and worst), the CPU the server's processes used (100 % = one core) and their
resident memory (front and each worker; K = 1 is a single process).

The client peers run here, on the same cores as the server (they decode every frame: VP8 and a
colour conversion), so they take CPU the server would otherwise have; both K share that handicap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from soak import cpu_seconds, rss_mb

from avatar.compose.profile import machine, session_speech
from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.testing.browser import server_process
from avatar.testing.peer import AvatarPeer

SETTLE_S = 2.0


def server_pids(url: str, front: int) -> dict[str, int]:
    """The server's processes by name: ``server`` alone, or ``front`` and ``w0``, ``w1``..."""
    with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
        ready = json.load(r)
    workers = {f"w{w['worker']}": int(w["pid"]) for w in ready.get("workers", [])}
    return {"front": front, **workers} if workers else {"server": front}


def counters(peer: AvatarPeer) -> dict[str, int]:
    stats = [m for m in peer.received.messages if m.get("type") == "stats"]
    last = stats[-1] if stats else {}
    return {k: int(last.get(k, 0)) for k in ("frames", "late", "skipped", "dropped")}


async def run_sessions(url: str, n: int, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    peers = [AvatarPeer(url, session_speech(seconds + 10, offset_s=1.7 * i),
                        summarize=lambda _: None) for i in range(n)]  # fmt: skip
    for p in peers:
        await p.connect(timeout_s=60)
    await asyncio.sleep(SETTLE_S)
    before = [counters(p) for p in peers]
    frames_before = [len(p.received.video) for p in peers]
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    await asyncio.sleep(seconds)
    cpu = {k: round(100 * (cpu_seconds(pid) - cpu0[k]) / seconds) for k, pid in pids.items()}
    rss = {k: round(rss_mb(pid)) for k, pid in pids.items()}
    after = [counters(p) for p in peers]
    fps = [(len(p.received.video) - f) / seconds for p, f in zip(peers, frames_before, strict=True)]
    owners = sorted(p.session.split(".")[0] if "." in p.session else "-" for p in peers)
    await asyncio.gather(*(p.close() for p in peers))
    delta = {k: sum(a[k] - b[k] for a, b in zip(after, before, strict=True)) for k in after[0]}
    frames = max(delta["frames"], 1)
    return {
        "sessions": n, "late_pct": round(100 * delta["late"] / frames, 2),
        "skipped_pct": round(100 * delta["skipped"] / frames, 2),
        "dropped_pct": round(100 * delta["dropped"] / frames, 2),
        "fps_mean": round(float(np.mean(fps)), 1), "fps_min": round(float(np.min(fps)), 1),
        "cpu_pct": cpu, "rss_mb": rss, "workers_of_sessions": owners,
    }  # fmt: skip


async def wait_idle(url: str, timeout_s: float = 30.0) -> None:
    for _ in range(round(timeout_s / 0.5)):
        with urllib.request.urlopen(f"{url}/api/health", timeout=5) as r:
            if json.load(r)["sessions"] == 0:
                return
        await asyncio.sleep(0.5)


def bench(k: int, sessions: list[int], seconds: float, size: int) -> dict[str, Any]:
    args = ["--workers", str(k), "--set", f"render.size={size}",
            "--set", f"server.max_sessions={max(sessions)}"]  # fmt: skip
    with server_process(*args, timeout_s=120) as server:
        pids = server_pids(server.url, server.proc.pid)
        idle = {name: round(rss_mb(pid)) for name, pid in pids.items()}
        runs = []
        for n in sessions:
            r = asyncio.run(run_sessions(server.url, n, seconds, pids))
            runs.append(r)
            print(f"K={k} N={n:2d}  late {r['late_pct']:5.2f} %  skipped {r['skipped_pct']:5.2f} %"
                  f"  dropped {r['dropped_pct']:5.2f} %  fps {r['fps_mean']:4.1f} "
                  f"(min {r['fps_min']:4.1f})  CPU % {r['cpu_pct']}  RSS MB {r['rss_mb']}  "
                  f"sessions on {r['workers_of_sessions']}", flush=True)  # fmt: skip
            asyncio.run(wait_idle(server.url))
    return {"workers": k, "rss_idle_mb": idle, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="comma-separated K values")
    ap.add_argument("--sessions", default="2,4,6", help="comma-separated N values")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per N")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # the client peers offer loopback too
    sessions = [int(n) for n in args.sessions.split(",")]
    print(
        f"machine: {machine()}; {args.size}x{args.size}; {args.seconds:g} s per N after "
        f"{SETTLE_S:g} s; client peers in this process, on the same cores",
        flush=True,
    )
    results = []
    for k in (int(k) for k in args.workers.split(",")):
        result = bench(k, sessions, args.seconds, args.size)
        print(f"K={k} idle RSS MB {result['rss_idle_mb']}", flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
