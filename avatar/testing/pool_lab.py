"""A node pool on one machine for tests and ``scripts/bench_cluster.py``: a real
``redis-server``, ``avatar serve --role node`` and ``--role gateway`` processes on loopback, and
the questions asked of them over HTTP and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from avatar.cluster import Keys, connect
from avatar.cluster.records import SessionLog, Tally
from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.services import RedisServer

# small frames, liveness in 1.5 s (a lab, not a deployment: the defaults are 1 s and 3 s)
COMMON = ["--set", "render.size=128", "--set", "server.cluster.heartbeat_s=0.5",
          "--set", "server.cluster.alive_s=1.5"]  # fmt: skip


# every lab client comes from 127.0.0.1: the gateways' per-client rates would see one client
ONE_ADDRESS = ["--set", "server.limits.offers_per_minute=1000000",
               "--set", "server.limits.offer_burst=100000",
               "--set", "server.limits.sockets_per_minute=1000000"]  # fmt: skip


@dataclass
class Pool:
    redis: RedisServer
    nodes: dict[str, ServerProcess]
    gateways: list[ServerProcess]


def node_args(redis: RedisServer, name: str, pool: str, capacity: int = 2,
              drain_s: float = 20.0) -> list[str]:  # fmt: skip
    return ["--role", "node", "--redis", redis.url, "--pool", pool,
            "--set", f"server.cluster.node_id={name}", "--set", f"server.max_sessions={capacity}",
            "--set", f"server.drain_s={drain_s}", *COMMON]  # fmt: skip


@contextlib.contextmanager
def pool_lab(
    folder: Path, nodes: Sequence[tuple[str, str]], gateways: int = 2, capacity: int = 2
) -> Iterator[Pool]:
    """Redis, ``nodes`` (name, pool) and ``gateways``; everything stops on exit."""
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # client peers offer loopback too
    redis = RedisServer(folder / "redis")
    redis.start()
    try:
        with contextlib.ExitStack() as stack:
            procs = {}
            for name, pool in nodes:
                args = node_args(redis, name, pool, capacity)
                procs[name] = stack.enter_context(server_process(*args, timeout_s=120))
            gateway = ["--role", "gateway", "--redis", redis.url, *COMMON, *ONE_ADDRESS]
            gws = [stack.enter_context(server_process(*gateway)) for _ in range(gateways)]
            yield Pool(redis, procs, gws)
    finally:
        redis.kill()


async def get(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + path) as r:
        return r.status, await (r.json() if r.content_type == "application/json" else r.text())


async def offer_status(url: str, pool: str = "cpu") -> tuple[int, str, str]:
    """An offer that is only answered, never connected: (status, error, Retry-After). Its
    session, if opened, ends by itself when it never connects."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": "offer", "pool": pool}
    try:
        async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json=body) as r:
            answer = await r.json()
            return r.status, str(answer.get("error", "")), r.headers.get("Retry-After", "")
    finally:
        await pc.close()


async def until(check: Any, timeout_s: float, every_s: float = 0.05) -> bool:
    """``check()`` (a coroutine or a bool) became true within ``timeout_s`` (a safety limit)."""
    for _ in range(max(round(timeout_s / every_s), 1)):
        done = check()
        if await done if asyncio.iscoroutine(done) else done:
            return True
        await asyncio.sleep(every_s)
    return False


async def ready_nodes(url: str, n: int) -> bool:
    """The gateway at ``url`` sees exactly ``n`` serving nodes."""
    status, body = await get(url, "/readyz")
    return status == 200 and body.get("nodes") == n


async def tally(redis_url: str) -> Tally:
    redis = connect(redis_url)
    try:
        return await SessionLog(redis, Keys()).tally()
    finally:
        await redis.aclose()


async def owners(redis_url: str, sids: list[str]) -> list[str | None]:
    redis = connect(redis_url)
    try:
        log = SessionLog(redis, Keys())
        return [await log.owner(sid) for sid in sids]
    finally:
        await redis.aclose()


async def closed_as(redis_url: str, reason: str, n: int) -> bool:
    """At least ``n`` sessions were recorded closed with ``reason`` (False while Redis is away)."""
    with contextlib.suppress(Exception):
        return (await tally(redis_url)).closed.get(reason, 0) >= n
    return False
