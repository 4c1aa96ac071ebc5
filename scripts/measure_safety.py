"""What a careless or hostile client costs a real ``avatar serve`` (its own process, loopback):

    python scripts/measure_safety.py [--cycles 100] [--parts cap,pcm_flood,churn,vanished_peer]
                                     [--out docs/safety.json]

1. The cap: 20 real aiortc offers at once against ``max_sessions=8``: answered / refused (503).
2. A PCM flood: 64 x 60 kB of PCM as fast as the socket takes it, on a session that never
   connects and on a connected one: how much was taken in 10 s (backpressure), the server's RSS
   before, at the end and after both sessions closed; and one 4 MiB message (closed, 1009).
3. Churn: ``--cycles`` connect / 0.5 s of media / close: server RSS at the start, after 10 and
   after all of them, sessions left.
4. A vanished peer (its UDP sockets closed without a word): seconds until the server frees the
   session (``server.reap_s`` is 8 s).

RSS is the server process' VmRSS from /proc. Prints one line per measurement; ``--out`` writes
them as JSON (merged into the file when it exists, so ``--parts`` can redo one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.peer import AvatarPeer

LIMITS = [
    "--set", "server.limits.offers_per_minute=100000", "--set", "server.limits.offer_burst=1000",
    "--set", "server.limits.sockets_per_minute=100000",
]  # fmt: skip


def rss_mb(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 48000)) / 48000
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def sessions_open(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/health") as r:
        return int((await r.json())["sessions"])


async def audio_queued_s(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    line = next(
        x for x in text.splitlines() if x.startswith('avatar_queue_depth{queue="audio_in_s"}')
    )
    return round(float(line.rsplit(" ", 1)[1]), 2)


async def cap(url: str) -> dict[str, Any]:
    peers = [AvatarPeer(url, tone(2.0)) for _ in range(20)]
    results = await asyncio.gather(*(p.connect() for p in peers), return_exceptions=True)
    refused = [r for r in results if isinstance(r, RuntimeError) and "(503)" in str(r)]
    answered = sum(r is None for r in results)
    out = {"offers": 20, "cap": 8, "answered": answered, "refused_503": len(refused),
           "other_errors": [str(r)[:80] for r in results
                            if isinstance(r, Exception) and r not in refused]}  # fmt: skip
    await asyncio.gather(*(p.close() for p in peers))
    return out


async def pcm_flood(url: str, server: ServerProcess) -> dict[str, Any]:
    before = rss_mb(server)
    connected = AvatarPeer(url, None)
    await connected.connect()
    never = AvatarPeer(url, None)  # an offer whose peer never connects: only its answer
    await never.send_offer()
    block = (np.sin(np.arange(30000) / 7) * 8000).astype("<i2").tobytes()  # 60 kB, 0.625 s
    taken: dict[str, int] = {}
    queued: dict[str, float] = {}  # audio waiting in the server, all sessions (from /metrics)
    async with aiohttp.ClientSession() as http:
        for name, peer in (("connected", connected), ("never_connected", never)):
            async with http.ws_connect(peer.socket_url("/ws/audio")) as ws:
                await ws.send_str(json.dumps({"type": "format", "sample_rate": 48000}))
                sent = 0

                async def flood(ws: Any = ws) -> None:
                    nonlocal sent
                    for _ in range(64):
                        await ws.send_bytes(block)
                        sent += 1

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flood(), 10.0)
                taken[name] = sent
                queued[name] = await audio_queued_s(http, url)
        async with http.ws_connect(connected.socket_url("/ws/audio")) as ws:
            refused = True
            try:  # one 4 MiB message: the server closes the socket (1009) while it arrives
                await ws.send_bytes(b"\0" * (4 << 20))
                refused = (await ws.receive()).type != aiohttp.WSMsgType.TEXT
            except (ConnectionError, aiohttp.ClientError):
                pass
    during = rss_mb(server)
    await connected.close()
    await never.close()
    await asyncio.sleep(3.0)
    return {"messages_of_60_kB_sent_in_10_s": taken, "server_audio_queued_s": queued,
            "4_MiB_message_refused": refused, "rss_mb_before": round(before, 1),
            "rss_mb_flooded": round(during, 1),
            "rss_mb_after_close": round(rss_mb(server), 1)}  # fmt: skip


async def churn(url: str, server: ServerProcess, cycles: int) -> dict[str, Any]:
    marks: dict[str, float] = {"start": rss_mb(server)}
    for i in range(1, cycles + 1):
        peer = AvatarPeer(url, tone(1.0))
        await peer.connect()
        await asyncio.sleep(0.5)
        await peer.close()
        if i in (10, cycles):
            await asyncio.sleep(2.0)
            marks[f"after_{i}"] = rss_mb(server)
    await asyncio.sleep(2.0)
    left = await sessions_open(url)
    return {"cycles": cycles, "rss_mb": {k: round(v, 1) for k, v in marks.items()},
            "sessions_left": left}  # fmt: skip


async def vanish(url: str) -> dict[str, Any]:
    peer = AvatarPeer(url, tone(30.0))
    await peer.connect()
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    peer.vanish()
    while await sessions_open(url) > 0 and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.1)
    reaped = time.monotonic() - t0
    await peer.close()
    return {"reaped_after_s": round(reaped, 1)}


PARTS = ("cap", "pcm_flood", "churn", "vanished_peer")


async def run(server: ServerProcess, cycles: int, parts: list[str]) -> dict[str, Any]:
    url = server.url
    make = {
        "cap": lambda: cap(url),
        "pcm_flood": lambda: pcm_flood(url, server),
        "churn": lambda: churn(url, server, cycles),
        "vanished_peer": lambda: vanish(url),
    }
    results: dict[str, Any] = {}
    for name in parts:
        results[name] = await make[name]()
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        await asyncio.sleep(2.0)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # this process' peers: loopback
    with server_process("--set", "server.max_sessions=8", *LIMITS) as server:
        results = asyncio.run(run(server, args.cycles, args.parts.split(",")))
        tracebacks = sum("Traceback" in line for line in server.log)
    results["server_log_tracebacks"] = tracebacks
    print(f"server log tracebacks: {tracebacks}")
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        args.out.write_text(json.dumps({**old, **results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
