"""Many machines on one: a real ``redis-server``, three ``avatar serve --role node`` processes
(two in pool ``cpu``, one in ``gpu``), two ``avatar serve --role gateway`` processes, real aiortc
peers. Sessions are placed through one gateway, their sockets reached through the other; a node
is killed, Redis goes away and comes back (behaviour only; waits are safety limits)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from avatar.cluster import Keys, connect
from avatar.cluster.records import SessionLog, Tally
from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.peer import AvatarPeer
from avatar.testing.services import RedisServer
from tests.test_server import speech

NO_REDIS = shutil.which("redis-server") is None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NO_REDIS, reason="needs redis-server")]
FAST = ["--set", "server.cluster.heartbeat_s=0.5", "--set", "server.cluster.alive_s=1.5"]


@dataclass
class Pool:
    redis: RedisServer
    nodes: dict[str, ServerProcess]
    gateways: list[ServerProcess]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # the client peers offer loopback too
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    common = ["--redis", redis.url, "--set", "render.size=128", "--set", "server.drain_s=0", *FAST]
    with contextlib.ExitStack() as stack:
        nodes = {}
        for name, pool_name in (("cpu-a", "cpu"), ("cpu-b", "cpu"), ("gpu-a", "gpu")):
            nodes[name] = stack.enter_context(server_process(
                "--role", "node", "--pool", pool_name, "--set", f"server.cluster.node_id={name}",
                "--set", "server.max_sessions=1", *common, timeout_s=120))  # fmt: skip
        gateways = [stack.enter_context(server_process("--role", "gateway", *common))
                    for _ in range(2)]  # fmt: skip
        try:
            yield Pool(redis, nodes, gateways)
        finally:
            redis.kill()


async def get(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + path) as r:
        return r.status, await (r.json() if r.content_type == "application/json" else r.text())


async def offer_status(url: str, pool: str = "cpu") -> tuple[int, str, str]:
    """An offer that is only answered, never connected: (status, error, Retry-After)."""
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


async def until(check: Any, timeout_s: float) -> bool:
    for _ in range(round(timeout_s / 0.1)):
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def tally(url: str) -> Tally:
    redis = connect(url)
    try:
        return await SessionLog(redis, Keys()).tally()
    finally:
        await redis.aclose()


def test_sessions_placed_by_one_gateway_reached_through_the_other_and_nodes_lost(
    pool: Pool,
) -> None:
    g1, g2 = (g.url for g in pool.gateways)

    async def run() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        assert await until(lambda: _ready_nodes(g1, 3), 20), await get(g1, "/readyz")
        audio = np.concatenate([speech(2.0), np.zeros(48000 * 30, np.float32)])
        peers = [AvatarPeer(g1, audio, summarize=lambda rgb: rgb.shape) for _ in range(2)]
        gpu = AvatarPeer(g1, audio, summarize=lambda rgb: rgb.shape, pool="gpu")
        for p in [*peers, gpu]:
            await p.connect(timeout_s=60)
        owners = await _owners(pool.redis.url, [p.session for p in [*peers, gpu]])
        seen["owners"] = owners
        seen["full"] = await offer_status(g2)  # both cpu nodes hold their one session
        seen["no_pool"] = await offer_status(g2, "tpu")
        async with aiohttp.ClientSession() as http:
            # the events socket of a session on a node, through the gateway that did not place it
            sockets = [await http.ws_connect(p.socket_url().replace(g1, g2)) for p in peers]
            seen["ws_events"] = [json.loads(await ws.receive_str()) for ws in sockets]
            frames = len(peers[0].received.video)
            await asyncio.sleep(1.0)
            seen["streaming"] = len(peers[0].received.video) > frames
            seen["bad_key"] = (await get(g2, f"/ws?session={peers[0].session}&key=x"))[0]
            seen["unknown"] = (await get(g2, "/ws?session=nope&key=x"))[0]
            # node death: the node of peers[0] is killed
            lost = owners[0]
            assert lost is not None
            pool.nodes[lost].proc.kill()
            seen["off_list"] = await until(lambda: _ready_nodes(g1, 2), 10)
            closed = await asyncio.wait_for(sockets[0].receive(), 10)
            seen["ws_closed"] = closed.type
            seen["swept"] = await until(
                lambda: _closed_as(pool.redis.url, "node_lost", 1), 10
            )  # fmt: skip
            seen["replaced"] = await offer_status(g2)  # the dead node's slot is not offered
            # Redis away: running sessions stream on, offers are refused clearly
            pool.redis.kill()
            frames = len(peers[1].received.video)
            seen["outage"] = await offer_status(g1)
            await asyncio.sleep(1.0)
            seen["streaming_in_outage"] = len(peers[1].received.video) > frames
            pool.redis.start()
            seen["back"] = await until(lambda: _ready_nodes(g1, 2), 10)
            for ws in sockets:
                await ws.close()
        await peers[1].close()  # the page goes: its node records client_left
        seen["client_left"] = await until(
            lambda: _closed_as(pool.redis.url, "client_left", 1), 15
        )  # fmt: skip
        again = AvatarPeer(g1, audio, summarize=lambda rgb: rgb.shape)  # placement is back
        await again.connect(timeout_s=60)
        seen["placed_again"] = await _owners(pool.redis.url, [again.session])
        await again.close()
        await until(lambda: _closed_as(pool.redis.url, "client_left", 2), 15)
        seen["tally"] = await tally(pool.redis.url)
        for p in (peers[0], gpu):
            await p.close()
        return seen

    seen = asyncio.run(run())
    cpu, gpu = seen["owners"][:2], seen["owners"][2]
    assert sorted(cpu) == ["cpu-a", "cpu-b"] and gpu == "gpu-a"  # spread; pools kept apart
    assert seen["full"][0] == 503 and "no node of pool 'cpu'" in seen["full"][1]
    assert seen["full"][2] == "10"  # Retry-After
    assert seen["no_pool"][0] == 503 and "'tpu'" in seen["no_pool"][1]
    assert all(e["type"] in ("stats", "speech_start", "speech_end") for e in seen["ws_events"])
    assert seen["streaming"]
    assert seen["bad_key"] == 404 and seen["unknown"] == 404
    assert seen["off_list"] and seen["ws_closed"] in (aiohttp.WSMsgType.CLOSE,
                                                      aiohttp.WSMsgType.CLOSED)  # fmt: skip
    assert seen["swept"]
    assert seen["replaced"][0] == 503  # the other cpu node is still full
    assert seen["outage"][0] == 503 and "Redis" in seen["outage"][1] and seen["outage"][2]
    assert seen["streaming_in_outage"] and seen["back"] and seen["client_left"]
    t = seen["tally"]
    assert seen["placed_again"] == [next(n for n in ("cpu-a", "cpu-b") if n != seen["owners"][0])]
    assert t.opened == 4 and t.closed == {"node_lost": 1, "client_left": 2} and t.balanced


async def _ready_nodes(url: str, n: int) -> bool:
    status, body = await get(url, "/readyz")
    return status == 200 and body.get("nodes") == n


async def _owners(redis_url: str, sids: list[str]) -> list[str | None]:
    redis = connect(redis_url)
    try:
        log = SessionLog(redis, Keys())
        return [await log.owner(sid) for sid in sids]
    finally:
        await redis.aclose()


async def _closed_as(redis_url: str, reason: str, n: int) -> bool:
    with contextlib.suppress(Exception):
        return (await tally(redis_url)).closed.get(reason, 0) >= n
    return False
