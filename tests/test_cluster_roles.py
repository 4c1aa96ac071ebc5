"""Many machines on one: a real ``redis-server``, three ``avatar serve --role node`` processes
(two in pool ``cpu``, one in ``gpu``), two ``avatar serve --role gateway`` processes, real aiortc
peers. Sessions are placed through one gateway, their sockets reached through the other; a node
is killed, Redis goes away and comes back (behaviour only; waits are safety limits)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest

from avatar.clock import MonotonicClock
from avatar.testing import browser
from avatar.testing.browser import server_process
from avatar.testing.peer import AvatarPeer
from avatar.testing.pool_lab import (
    Pool,
    closed_as,
    get,
    node_args,
    offer_status,
    owners,
    pool_lab,
    ready_nodes,
    tally,
    until,
)
from avatar.testing.roaming import RoamingPeer
from tests.conftest import write_wav
from tests.test_server import speech

T = TypeVar("T")
NO_REDIS = shutil.which("redis-server") is None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NO_REDIS, reason="needs redis-server")]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    nodes = (("cpu-a", "cpu"), ("cpu-b", "cpu"), ("gpu-a", "gpu"))
    with pool_lab(tmp_path_factory.mktemp("pool"), nodes) as lab:
        yield lab


def test_a_pool_places_moves_and_records_every_session(pool: Pool) -> None:
    g1, g2 = (g.url for g in pool.gateways)
    clock = MonotonicClock()

    def roaming(url: str, pool_name: str = "cpu") -> RoamingPeer:
        audio = np.concatenate([speech(2.0), np.zeros(48000 * 60, np.float32)])
        return RoamingPeer(lambda: AvatarPeer(url, audio, summarize=lambda rgb: rgb.shape,
                                              pool=pool_name), clock)  # fmt: skip

    async def run() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        assert await until(lambda: ready_nodes(g1, 3), 20), await get(g1, "/readyz")
        peers = [roaming(g1), roaming(g1), roaming(g1, "gpu")]
        for p in peers:
            await p.start()
        seen["owners"] = await owners(pool.redis.url, [p.sessions[-1] for p in peers])
        seen["no_pool"] = await offer_status(g2, "tpu")
        http = aiohttp.ClientSession()
        # a session's events socket through the gateway that did not place it
        first = peers[0].peer
        assert first is not None
        url = first.socket_url().replace(_ws(g1), _ws(g2))
        assert url.startswith(_ws(g2))
        async with http.ws_connect(url) as ws:
            seen["ws_event"] = json.loads(await ws.receive_str())["type"]
            pool.gateways[1].proc.kill()  # that gateway dies: its socket closes...
            seen["ws_closed"] = await _closed_type(ws)
        frames = len(peers[0].frame_times())
        await asyncio.sleep(1.0)  # ...and the session it relayed streams on
        seen["streams_on"] = len(peers[0].frame_times()) > frames
        # back through the other gateway (left open: a page closing it would leave)
        again = await http.ws_connect(first.socket_url())
        seen["ws_again"] = json.loads(await again.receive_str())["type"]
        # a plain GET of the socket's address is refused before anything opens on the node
        plain = first.socket_url().replace(_ws(g1), g1)
        seen["plain_get"] = (await get(plain, ""))[0]
        await asyncio.sleep(0.5)
        seen["still_open"] = await owners(pool.redis.url, [first.session])
        # drain: the node of peers[0] is told to stop; its page moves before it leaves
        drained = seen["owners"][0]
        pool.nodes[drained].proc.terminate()
        seen["not_placed"] = await until(lambda: ready_nodes(g1, 2), 5)
        seen["moved"] = await until(lambda: _moved(peers[0], 1), 30)
        seen["drained"] = await until(lambda: closed_as(pool.redis.url, "drained", 1), 30)
        # death: a new node joins, the other cpu node is killed; both its pages move
        with server_process(*node_args(pool.redis, "cpu-c", "cpu"), timeout_s=120):
            assert await until(lambda: ready_nodes(g1, 3), 20)
            killed = seen["owners"][1]
            pool.nodes[killed].proc.kill()
            seen["off_list"] = await until(lambda: ready_nodes(g1, 2), 10)
            seen["both_moved"] = await until(
                lambda: _moved(peers[0], 2) and _moved(peers[1], 1), 30
            )  # fmt: skip
            seen["lost"] = await until(lambda: closed_as(pool.redis.url, "node_lost", 2), 15)
            seen["now_on"] = await owners(pool.redis.url, [p.sessions[-1] for p in peers[:2]])
            seen["full"] = await offer_status(g1)  # cpu-c holds its two sessions
            # Redis away: the sessions stream on, offers are refused with the reason
            pool.redis.kill()
            frames = len(peers[1].frame_times())
            seen["outage"] = await offer_status(g1)
            await asyncio.sleep(1.0)
            seen["streams_in_outage"] = len(peers[1].frame_times()) > frames
            pool.redis.start()
            seen["back"] = await until(lambda: ready_nodes(g1, 2), 10)
            seen["moves"] = [(m.reason, m.first_frame_ns > 0) for p in peers for m in p.moves]
            for p in peers:
                await p.close()
            await http.close()
            seen["left"] = await until(lambda: _none_active(pool.redis.url), 15)
            seen["tally"] = await tally(pool.redis.url)
        return seen

    seen = asyncio.run(run())
    cpu, gpu = seen["owners"][:2], seen["owners"][2]
    assert sorted(cpu) == ["cpu-a", "cpu-b"] and gpu == "gpu-a"  # spread; pools kept apart
    assert seen["no_pool"][0] == 503 and "'tpu'" in seen["no_pool"][1]
    assert seen["ws_event"] in ("stats", "speech_start", "speech_end")
    assert seen["ws_closed"] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert seen["streams_on"] and seen["ws_again"] in ("stats", "speech_start", "speech_end")
    assert seen["plain_get"] == 400 and seen["still_open"] == [seen["owners"][0]]
    assert seen["not_placed"] and seen["moved"] and seen["drained"]
    assert seen["off_list"] and seen["both_moved"] and seen["lost"]
    assert seen["now_on"] == ["cpu-c", "cpu-c"]
    assert seen["full"][0] == 503 and "no node of pool 'cpu'" in seen["full"][1]
    assert seen["full"][2] == "10"  # Retry-After
    assert seen["outage"][0] == 503 and "Redis" in seen["outage"][1] and seen["outage"][2]
    assert seen["streams_in_outage"] and seen["back"] and seen["left"]
    # told once (the drain), then both pages off the killed node; a loaded machine may add a
    # move for a video stall of its own (each move opens a session and closes one)
    moves = seen["moves"]
    assert ("told", True) in moves and sum(m == ("stalled", True) for m in moves) >= 2
    assert all(shown for _, shown in moves)
    t = seen["tally"]
    assert t.balanced and t.opened == 3 + len(moves) and t.active == 0
    assert t.closed["drained"] == 1 and t.closed["node_lost"] >= 2
    assert set(t.closed) <= {"drained", "node_lost", "client_left"}


async def _none_active(redis_url: str) -> bool:
    return (await tally(redis_url)).active == 0


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1)


async def _closed_type(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMsgType:
    """The first message after those already on their way that is not an event."""
    async with asyncio.timeout(10):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    return msg.type


def _moved(peer: RoamingPeer, n: int) -> bool:
    return len(peer.moves) >= n and all(m.first_frame_ns for m in peer.moves[:n])


@pytest.mark.skipif(not browser.chromium_available(), reason="needs playwright + chromium")
def test_the_page_moves_to_another_node_when_its_node_drains_or_dies(
    tmp_path: Path, mic_wav: Path
) -> None:
    """Chromium runs the demo page through a gateway: its node drains (the page is told), then
    the next one is killed (its video stalls); each time the page opens a session elsewhere and
    the same <video> keeps presenting frames."""
    nodes = (("cpu-a", "cpu"), ("cpu-b", "cpu"), ("cpu-c", "cpu"))
    with pool_lab(tmp_path, nodes, gateways=1) as lab, browser.chromium_page(mic_wav) as page:
        url = lab.gateways[0].url
        assert off_loop(until(lambda: ready_nodes(url, 3), 20))
        browser.start_demo(page, url)
        page.evaluate(
            "() => { window.__moves = []; avatarClient.on('moved', (e) => __moves.push(e)); }"
        )
        seen: list[tuple[str, bool, bool]] = []
        for stop in ("terminate", "kill"):
            page.wait_for_function("window.__avatarFrames.length >= 25", timeout=30_000)
            sid = page.evaluate("avatarClient.session")
            (node,) = off_loop(owners(lab.redis.url, [sid]))
            assert node is not None
            getattr(lab.nodes[node].proc, stop)()
            moves = len(seen) + 1
            page.wait_for_function(f"window.__moves.length >= {moves}", timeout=60_000)
            shown = page.evaluate("window.__avatarFrames.length")
            page.wait_for_function(f"window.__avatarFrames.length >= {shown + 25}",
                                   timeout=30_000)  # fmt: skip
            move = page.evaluate("window.__moves.at(-1)")
            (now_on,) = off_loop(owners(lab.redis.url, [move["to"]]))
            seen.append((move["reason"], move["from"] == sid, now_on != node))
    assert seen[0] == ("told", True, True)  # drained: told to move, moved before it closed
    assert seen[1][0] in ("stalled", "failed") and seen[1][1:] == (True, True)


def off_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` run to the end in a thread of its own (Playwright's loop holds this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech then silence at 48 kHz (Chromium loops it)."""
    audio = np.concatenate([speech(3.0), np.zeros(48000 * 3, np.float32)])
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", audio, 48000)


def test_a_node_with_worker_processes_is_one_node_of_the_pool(tmp_path: Path) -> None:
    """``--role node --workers 2``: the front publishes one record (its workers' sessions
    summed, twice the capacity); each worker records its own sessions under the node's id; a
    gateway places on it and reaches a worker's session through the front."""
    with pool_lab(tmp_path, ()) as lab, server_process(
        *node_args(lab.redis, "multi", "cpu", capacity=1), "--workers", "2", timeout_s=120
    ):  # fmt: skip
        gw = lab.gateways[0].url

        async def run() -> dict[str, Any]:
            assert await until(lambda: ready_nodes(gw, 1), 30)
            seen: dict[str, Any] = {"capacity": (await get(gw, "/readyz"))[1]["capacity"]}
            audio = np.zeros(48000 * 20, np.float32)
            peers = [AvatarPeer(gw, audio, summarize=lambda rgb: 0) for _ in range(2)]
            for p in peers:
                await p.connect(timeout_s=60)
            seen["workers"] = sorted(p.session.split(".")[0] for p in peers)
            await asyncio.sleep(1.5)  # the front's next record counts its workers' sessions
            seen["metrics"] = (await get(gw, "/metrics"))[1]
            seen["owners"] = await owners(lab.redis.url, [p.session for p in peers])
            seen["full"] = (await offer_status(gw))[0]
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(peers[1].socket_url())  # gateway -> front -> worker
                seen["ws"] = json.loads(await ws.receive_str())["type"]
                for p in peers:
                    await p.close()
                await ws.close()
            seen["left"] = await until(lambda: _none_active(lab.redis.url), 15)
            seen["tally"] = await tally(lab.redis.url)
            return seen

        seen = asyncio.run(run())
    assert seen["capacity"] == 2 and seen["workers"] == ["w0", "w1"]
    # what the HPA scales a pool on (deploy/k8s/prometheus-adapter-rules.yaml)
    for line in ('avatar_pool_nodes{pool="cpu",state="serving"} 1.0',
                 'avatar_pool_sessions{pool="cpu",what="capacity"} 2.0',
                 'avatar_pool_sessions{pool="cpu",what="sessions"} 2.0'):  # fmt: skip
        assert line in seen["metrics"], seen["metrics"][-800:]
    assert seen["owners"] == ["multi", "multi"] and seen["full"] == 503
    assert seen["ws"] in ("stats", "speech_start", "speech_end", "ready") and seen["left"]
    t = seen["tally"]
    assert t.opened == 2 and t.closed == {"client_left": 2} and t.balanced


def test_whip_and_whep_go_through_any_gateway_to_the_sessions_node(tmp_path: Path) -> None:
    """A WHIP publisher placed through one gateway; its resource read, watched over WHEP and
    deleted through either: every request reaches the node that holds the session."""
    from tests.test_whip import _offer

    with pool_lab(tmp_path, (("cpu-a", "cpu"), ("cpu-b", "cpu"))) as lab:
        g1, g2 = (g.url for g in lab.gateways)
        sdp = {"Content-Type": "application/sdp"}

        async def run() -> dict[str, Any]:
            assert await until(lambda: ready_nodes(g1, 2), 30)
            seen: dict[str, Any] = {}
            pub, offer = await _offer(audio="sendonly", video="sendonly")
            viewer, view = await _offer(audio="recvonly", video="recvonly")
            async with aiohttp.ClientSession() as http:

                async def call(method: str, url: str, body: str = "", **h: str) -> Any:
                    async with http.request(method, url, data=body.encode(), headers=h) as r:
                        return r.status, r.headers.copy()

                seen["options"] = await call("OPTIONS", f"{g2}/whip")
                seen["created"] = _, headers = await call("POST", f"{g1}/whip", offer, **sdp)
                loc = headers["Location"]
                rid = loc.rsplit("/", 1)[1]
                seen["owner"] = await owners(lab.redis.url, [rid.rpartition(".")[0]])
                seen["exists"] = (await call("GET", g2 + loc))[0]
                seen["view"] = await call("POST", f"{g2}/whep/{rid}", view, **sdp)
                seen["unknown"] = (await call("POST", f"{g2}/whep/x{rid}", view, **sdp))[0]
                viewer_loc = seen["view"][1]["Location"]
                seen["viewer_gone"] = (await call("DELETE", g1 + viewer_loc))[0]
                seen["deleted"] = (await call("DELETE", g2 + loc))[0]
                seen["after"] = (await call("GET", g1 + loc))[0]
            for pc in (pub, viewer):
                await pc.close()
            seen["left"] = await until(lambda: _none_active(lab.redis.url), 15)
            seen["tally"] = await tally(lab.redis.url)
            return seen

        seen = asyncio.run(run())
    assert seen["options"][0] == 200 and seen["options"][1]["Accept-Post"] == "application/sdp"
    status, headers = seen["created"]
    assert status == 201 and headers["Location"].startswith("/whip/") and headers["ETag"]
    assert seen["owner"][0] in ("cpu-a", "cpu-b") and seen["exists"] == 204
    assert seen["view"][0] == 201 and seen["view"][1]["Location"].startswith("/whep/")
    assert seen["unknown"] == 404 and seen["viewer_gone"] == 200
    assert seen["deleted"] == 200 and seen["after"] == 404 and seen["left"]
    t = seen["tally"]
    assert t.opened == 1 and t.closed == {"client_left": 1} and t.balanced
