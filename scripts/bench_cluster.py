"""The node pool's numbers: placement, no overfill, balance, node and gateway death, drain, a Redis
outage. Prints a table (and ``--out`` JSON).

Part 1 is the gateway's placement decision in-process (registry read + the hold script) on a real
``redis-server`` with 3 and 30 nodes registered. Part 2 is a lab on this machine
(:mod:`avatar.testing.pool_lab`): real ``avatar serve --role node`` processes (3 in pool ``cpu``,
1 in ``gpu``, 8 slots each), 2 gateways, aiortc peers that re-place themselves
(:class:`~avatar.testing.roaming.RoamingPeer`). The lab's liveness is 1.5 s (heartbeat 0.5 s); a
deployment's default is 3 s (heartbeat 1 s): node-death times scale with it.

    python scripts/bench_cluster.py [--out docs/bench_cluster.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.audio.io import load_audio
from avatar.clock import MonotonicClock
from avatar.cluster import Keys, connect
from avatar.cluster.placement import Placer
from avatar.cluster.registry import NodeInfo, NodeRegistry
from avatar.compose.profile import machine
from avatar.resources import package_dir
from avatar.testing.peer import AvatarPeer
from avatar.testing.pool_lab import (
    Pool,
    closed_as,
    get,
    offer_status,
    owners,
    pool_lab,
    ready_nodes,
    tally,
    until,
)
from avatar.testing.roaming import RoamingPeer
from avatar.testing.services import RedisServer

SLOTS = 8
NS = 1e9


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


# -- part 1: the placement decision ---------------------------------------------------------


async def placement(url: str, n_nodes: int, rounds: int = 300) -> dict[str, float]:
    redis = connect(url)
    keys = Keys(f"bench{n_nodes}:")
    registry = NodeRegistry(redis, keys, 30.0)
    placer = Placer(redis, keys, registry, 10.0, random.Random(0))
    try:
        for i in range(n_nodes):
            await registry.publish(
                NodeInfo(f"n{i}", f"http://10.0.0.{i}:8080", "cpu", ("default",), 10**6, 0)
            )
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            hold = await placer.place("cpu", "default")
            times.append((time.perf_counter() - t) * 1e3)
            assert hold is not None
            await placer.release(hold)
        t = time.perf_counter()

        async def one() -> None:
            hold = await placer.place("cpu", "default")
            assert hold is not None
            await placer.release(hold)

        await asyncio.gather(*(one() for _ in range(rounds)))
        concurrent = rounds / (time.perf_counter() - t)
    finally:
        await redis.aclose()
    return {
        "p50_ms": pct(times, 50),
        "p95_ms": pct(times, 95),
        "per_s_sequential": 1e3 / statistics.mean(times),
        "per_s_concurrent": concurrent,
    }


# -- part 2: the lab ------------------------------------------------------------------------


async def node_sessions(lab: Pool) -> dict[str, int]:
    out = {}
    for name, proc in lab.nodes.items():
        if proc.proc.poll() is None:
            out[name] = (await get(proc.url, "/readyz"))[1].get("sessions", 0)
    return out


async def empty(lab: Pool) -> None:
    """Until unconnected sessions expired (the nodes' connect timeout, 30 s)."""

    async def none_left() -> bool:
        return sum((await node_sessions(lab)).values()) == 0

    await until(none_left, 60, 0.5)


async def overfill(lab: Pool) -> dict[str, Any]:
    g = [gw.url for gw in lab.gateways]
    answers = await asyncio.gather(*(offer_status(g[k % 2]) for k in range(50)))
    per_node = await node_sessions(lab)
    refused = [a for a in answers if a[0] == 503]
    return {
        "accepted": sum(a[0] == 200 for a in answers),
        "per_node": per_node,
        "refused_503": len(refused),
        "retry_after": sorted({a[2] for a in refused}),
    }


async def balance(lab: Pool, n: int = 24) -> dict[str, Any]:
    g = [gw.url for gw in lab.gateways]
    for k in range(n):
        await offer_status(g[k % 2])
    per_node = {k: v for k, v in (await node_sessions(lab)).items() if k.startswith("cpu")}
    return {"per_node": per_node, "spread": max(per_node.values()) - min(per_node.values())}


async def offer_times(lab: Pool, rounds: int = 6) -> dict[str, float]:
    direct: list[float] = []
    through: list[float] = []
    node = next(p.url for name, p in lab.nodes.items() if name.startswith("cpu"))
    for _ in range(rounds):
        for url, out in ((node, direct), (lab.gateways[0].url, through)):
            t = time.perf_counter()
            status, _, _ = await offer_status(url)
            assert status == 200, status
            out.append((time.perf_counter() - t) * 1e3)
    return {
        "direct_p50_ms": pct(direct, 50),
        "gateway_p50_ms": pct(through, 50),
        "added_p50_ms": pct(through, 50) - pct(direct, 50),
    }


async def pools(lab: Pool) -> dict[str, Any]:
    peers = [AvatarPeer(lab.gateways[0].url, None, pool="gpu") for _ in range(3)]
    sids = []
    for p in peers:
        await p.send_offer()
        sids.append(p.session)
    where = await owners(lab.redis.url, sids)
    for p in peers:
        await p.close()
    return {"gpu_sessions_on": dict(Counter(str(w) for w in where))}


def roaming(url: str, clock: MonotonicClock, audio: np.ndarray) -> RoamingPeer:
    return RoamingPeer(lambda: AvatarPeer(url, audio, summarize=lambda rgb: 0), clock)


async def on_busiest_node(
    lab: Pool, clock: MonotonicClock, audio: np.ndarray, n: int
) -> tuple[list[RoamingPeer], str, list[RoamingPeer]]:
    """``n`` roaming pages through gateway 1; the node holding most of them, and those pages."""
    peers = [roaming(lab.gateways[0].url, clock, audio) for _ in range(n)]
    for p in peers:
        await p.start()
    where = await owners(lab.redis.url, [p.sessions[-1] for p in peers])
    victim = Counter(w for w in where if w).most_common(1)[0][0]
    return peers, str(victim), [p for p, w in zip(peers, where, strict=True) if w == victim]


def gap_ms(peer: RoamingPeer, around_ns: int) -> float:
    """The longest wait between two frames the page showed, from 1 s before ``around_ns``."""
    times = [t for t in peer.frame_times() if t >= around_ns - NS]
    return max(np.diff(times), default=0) / 1e6 if len(times) > 1 else float("nan")


async def node_death(lab: Pool, clock: MonotonicClock, audio: np.ndarray) -> dict[str, Any]:
    g1 = lab.gateways[0].url
    peers, victim, hit = await on_busiest_node(lab, clock, audio, 4)
    alive = len(lab.nodes)
    killed = clock.now_ns()
    lab.nodes[victim].proc.kill()
    await until(lambda: ready_nodes(g1, alive - 1), 15, 0.02)
    off = (clock.now_ns() - killed) / 1e6
    before = (await tally(lab.redis.url)).closed.get("node_lost", 0)
    await until(lambda: closed_as(lab.redis.url, "node_lost", before + len(hit)), 20, 0.05)
    recorded = (clock.now_ns() - killed) / 1e6
    await until(lambda: all(p.moves and p.moves[-1].first_frame_ns for p in hit), 30)
    shown = [(p.moves[-1].first_frame_ns - killed) / 1e6 for p in hit if p.moves]
    result = {
        "node": victim,
        "sessions_hit": len(hit),
        "off_list_ms": off,
        "records_ms": recorded,
        "new_frame_after_kill_ms": shown,
        "moved": sum(bool(p.moves) for p in hit),
    }
    for p in peers:
        await p.close()
    return result


async def gateway_death(lab: Pool, clock: MonotonicClock, audio: np.ndarray) -> dict[str, Any]:
    g1, g2 = (gw.url for gw in lab.gateways)
    peers = [roaming(g1, clock, audio) for _ in range(2)]
    for p in peers:
        await p.start()
    http = aiohttp.ClientSession()
    sockets = []
    for p in peers:
        assert p.peer is not None
        url = p.peer.socket_url().replace(g1.replace("http", "ws", 1), g2.replace("http", "ws", 1))
        sockets.append(await http.ws_connect(url))
    sessions = [p.sessions[-1] for p in peers]
    killed = clock.now_ns()
    lab.gateways[1].proc.kill()
    for ws in sockets:  # the page sees its socket close and opens it through another gateway
        while not ws.closed and (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    back = []
    for p in peers:
        assert p.peer is not None
        ws = await http.ws_connect(p.peer.socket_url())
        await ws.receive_str()
        back.append((clock.now_ns() - killed) / 1e6)
        sockets.append(ws)
    await asyncio.sleep(1.0)
    lost = [s for p, s in zip(peers, sessions, strict=True) if p.sessions[-1] != s or p.moves]
    result = {"sessions_lost": len(lost), "socket_back_ms": back}
    for p in peers:
        await p.close()
    await http.close()
    return result


async def drain(lab: Pool, clock: MonotonicClock, audio: np.ndarray) -> dict[str, Any]:
    g1 = lab.gateways[0].url
    peers, victim, hit = await on_busiest_node(lab, clock, audio, 3)
    serving = (await get(g1, "/readyz"))[1]["nodes"]
    told = clock.now_ns()
    lab.nodes[victim].proc.terminate()
    await until(lambda: ready_nodes(g1, serving - 1), 10, 0.02)
    unplaced = (clock.now_ns() - told) / 1e6
    await until(lambda: all(p.moves and p.moves[-1].first_frame_ns for p in hit), 60)
    result = {
        "node": victim,
        "sessions_hit": len(hit),
        "not_placed_after_ms": unplaced,
        "moved_before_close": sum(bool(p.moves) and p.moves[-1].reason == "told" for p in hit),
        "video_gap_ms": [gap_ms(p, p.moves[-1].trigger_ns) for p in hit if p.moves],
    }
    for p in peers:
        await p.close()
    return result


async def redis_outage(lab: Pool, clock: MonotonicClock, audio: np.ndarray) -> dict[str, Any]:
    g1 = lab.gateways[0].url
    peers = [roaming(g1, clock, audio) for _ in range(2)]
    for p in peers:
        await p.start()
    lab.redis.kill()
    start = clock.now_ns()
    frames = [len(p.frame_times()) for p in peers]
    offers = [await offer_status(g1) for _ in range(3)]
    await asyncio.sleep(max(0.0, 5.0 - (clock.now_ns() - start) / NS))
    during = [len(p.frame_times()) - f for p, f in zip(peers, frames, strict=True)]
    lab.redis.start()
    back = clock.now_ns()

    async def placed() -> bool:
        return (await offer_status(g1))[0] == 200

    await until(placed, 20, 0.1)
    result = {
        "outage_s": 5,
        "frames_during": during,
        "moves": sum(len(p.moves) for p in peers),
        "offers": sorted({a[0] for a in offers}),
        "error": offers[0][1],
        "placement_back_ms": (clock.now_ns() - back) / 1e6,
    }
    for p in peers:
        await p.close()
    return result


async def lab_run(folder: Path) -> dict[str, Any]:
    nodes = [("cpu-a", "cpu"), ("cpu-b", "cpu"), ("cpu-c", "cpu"), ("gpu-a", "gpu")]
    clock = MonotonicClock()
    speech = load_audio(package_dir("assets") / "sample.ogg", 48000)
    audio = np.concatenate([speech, np.zeros(48000 * 120, np.float32)])
    out: dict[str, Any] = {}
    with pool_lab(folder, nodes, gateways=2, capacity=SLOTS) as lab:
        await until(lambda: ready_nodes(lab.gateways[0].url, 4), 30)
        out["overfill"] = await overfill(lab)
        await empty(lab)
        out["balance"] = await balance(lab)
        await empty(lab)
        out["offer"] = await offer_times(lab)
        out["pools"] = await pools(lab)
        await empty(lab)
        out["gateway_death"] = await gateway_death(lab, clock, audio)
        out["node_death"] = await node_death(lab, clock, audio)
        out["drain"] = await drain(lab, clock, audio)
        out["redis_outage"] = await redis_outage(lab, clock, audio)
        await asyncio.sleep(2.0)
        t = await tally(lab.redis.url)
        out["records"] = {
            "opened": t.opened,
            "closed": t.closed,
            "active": t.active,
            "balanced": t.balanced,
        }
    return out


def report(res: dict[str, Any]) -> None:
    p = res["placement"]
    lab = res["lab"]
    print(f"machine: {res['machine']}")
    print("\nplacement decision (registry read + hold script + release), in-process, real Redis")
    for n, r in p.items():
        print(
            f"  {n:>3} nodes: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms; "
            f"{r['per_s_sequential']:.0f}/s one at a time, {r['per_s_concurrent']:.0f}/s "
            "concurrent"
        )
    o, b, off = lab["overfill"], lab["balance"], lab["offer"]
    print("\nthe lab: 3 cpu nodes + 1 gpu node x 8 slots, 2 gateways, aiortc peers")
    print(
        f"  offer -> answer: direct {off['direct_p50_ms']:.0f} ms, through a gateway "
        f"{off['gateway_p50_ms']:.0f} ms (+{off['added_p50_ms']:.0f} ms), p50"
    )
    print(
        f"  50 offers at once, 2 gateways: {o['accepted']} accepted, per node {o['per_node']}, "
        f"{o['refused_503']} x 503 (Retry-After {o['retry_after']})"
    )
    print(f"  24 sequential sessions: per node {b['per_node']}, spread {b['spread']}")
    print(f"  pool gpu: sessions on {lab['pools']['gpu_sessions_on']}")
    n = lab["node_death"]
    print(
        f"  node killed ({n['sessions_hit']} sessions): off the list {n['off_list_ms']:.0f} ms; "
        f"records {n['records_ms']:.0f} ms; a frame from another node "
        f"{[round(x) for x in n['new_frame_after_kill_ms']]} ms after the kill"
    )
    g = lab["gateway_death"]
    print(
        f"  gateway killed: {g['sessions_lost']} sessions lost; sockets back through the other "
        f"{[round(x) for x in g['socket_back_ms']]} ms after"
    )
    d = lab["drain"]
    print(
        f"  drain (SIGTERM, {d['sessions_hit']} sessions): not placed after "
        f"{d['not_placed_after_ms']:.0f} ms; moved before their old session closed "
        f"{d['moved_before_close']}/{d['sessions_hit']}; longest video gap "
        f"{[round(x) for x in d['video_gap_ms']]} ms"
    )
    r = lab["redis_outage"]
    print(
        f"  Redis away {r['outage_s']} s: frames received meanwhile {r['frames_during']}, "
        f"moves {r['moves']}, offers {r['offers']} ({r['error'][:60]}); placement back "
        f"{r['placement_back_ms']:.0f} ms after Redis"
    )
    rec = lab["records"]
    print(
        f"  records: opened {rec['opened']} = closed {rec['closed']} + active {rec['active']}: "
        f"{rec['balanced']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis-placement")
        redis.start()
        try:
            place = {n: asyncio.run(placement(redis.url, n)) for n in (3, 30)}
        finally:
            redis.kill()
        lab = asyncio.run(lab_run(folder / "lab"))
    res = {"machine": machine(), "placement": place, "lab": lab}
    report(res)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
