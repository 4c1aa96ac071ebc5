"""``avatar serve --workers 2``: a front process and two worker processes, real aiortc peers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from avatar.config import ServerConfig, load_config
from avatar.errors import ConfigError
from avatar.server.aiortc_hooks import configure_ice
from avatar.server.metrics import merge_expositions
from avatar.server.workers import port_slice, worker_config, worker_count
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.peer import AvatarPeer
from tests.test_server import speech
from tests.timeline import assert_accounted, wait_until

SIZE = 256


def test_worker_settings_split_ports_and_leave_tokens_and_rates_to_the_front() -> None:
    assert load_config().server.workers == 1  # one process unless asked
    auto = load_config(overrides=["server.workers=auto"]).server
    assert worker_count(auto) == len(os.sched_getaffinity(0))
    assert [port_slice((40000, 40100), 2, i) for i in (0, 1)] == [(40000, 40049), (40050, 40100)]
    assert port_slice(None, 4, 3) is None
    with pytest.raises(ConfigError, match="fewer ports"):
        port_slice((40000, 40002), 4, 0)
    cfg = load_config(overrides=["server.host=0.0.0.0", "server.udp_ports=[40000, 40099]",
                                 "server.workers=2"])  # fmt: skip
    w = worker_config(cfg, 2, 1).server
    assert (w.workers, w.host, w.auth.require_token, w.udp_ports) == (1, "127.0.0.1", "never",
                                                                       (40050, 40099))  # fmt: skip
    assert w.limits.offers_per_minute > 1e6 and w.max_sessions == cfg.server.max_sessions


def test_metrics_of_several_processes_merge_into_one_family_each() -> None:
    one = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v"} 2.0\n'
    text = merge_expositions([("0", one), ("1", one)]).decode()
    assert text.count("# TYPE a_total counter") == 1
    assert 'a_total{k="v",worker="0"} 2.0' in text and 'a_total{k="v",worker="1"} 2.0' in text


@pytest.fixture(scope="module")
def front() -> Iterator[ServerProcess]:
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # the client peers offer loopback too
    with server_process("--workers", "2", "--set", f"render.size={SIZE}", timeout_s=120) as s:
        yield s


async def get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url + path) as r:
        return await (r.json() if r.content_type == "application/json" else r.text())


async def sessions_per_worker(url: str) -> list[int]:
    return [w["sessions"] for w in (await get(url, "/readyz"))["workers"]]


async def until(check: Any, timeout_s: float) -> bool:
    for _ in range(round(timeout_s / 0.2)):
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def events_until(ws: aiohttp.ClientWebSocketResponse, wanted: set[str]) -> list[str]:
    """Events until every wanted one has come: types, and errors as ``error:<message>``
    (a wanted ``error:...`` is a prefix of the message)."""
    seen: list[str] = []
    missing = set(wanted)
    async with asyncio.timeout(15):
        while missing:
            msg = json.loads(await ws.receive_str())
            seen.append(msg["type"] if msg["type"] != "error" else f"error:{msg['message']}")
            missing = {w for w in missing if not seen[-1].startswith(w)}
    return seen


@pytest.mark.slow
def test_sessions_spread_over_both_workers_and_their_sockets_go_through_the_front(
    front: ServerProcess,
) -> None:
    url = front.url

    async def run() -> None:
        ready = await get(url, "/readyz")
        pids = [w["pid"] for w in ready["workers"]]
        assert len(pids) == 2 and all(w["up"] for w in ready["workers"])
        assert all(_parent(pid) == front.proc.pid for pid in pids)  # two children, no more
        assert len(_children(front.proc.pid)) == 2
        audio = np.concatenate([speech(3.0), np.zeros(48000 * 10, np.float32)])
        peers = [AvatarPeer(url, audio, summarize=lambda rgb: rgb.shape) for _ in range(3)]
        peers.append(AvatarPeer(url, None, summarize=lambda rgb: rgb.shape))  # PCM over /ws/audio
        for p in peers:  # one after another: each offer sees where the previous went
            await p.connect(timeout_s=60)
        assert Counter(p.session.split(".")[0] for p in peers) == {"w0": 2, "w1": 2}
        assert await sessions_per_worker(url) == [2, 2]
        metrics = await get(url, "/metrics")
        for w in "01":
            assert f'avatar_sessions_active{{worker="{w}"}} 2.0' in metrics
            assert f'process_resident_memory_bytes{{worker="{w}"}}' in metrics
        assert await wait_until(lambda: all(len(p.received.video) > 10 for p in peers))
        for p in peers:  # real frames from either worker
            assert p.received.video[-1][2] == (SIZE, SIZE, 3)

        async with aiohttp.ClientSession() as http:
            on = {p.session[:2]: p for p in peers[:3]}  # a microphone session on each worker
            sockets = [await http.ws_connect(on[w].socket_url("/ws")) for w in ("w0", "w1")]
            for ws in sockets:  # text and binary reach the worker, its events come back
                await ws.send_str('{"type": "nope"}')
                await ws.send_bytes(b"\x00\x01")
                await events_until(ws, {"stats", "error:unknown message ty",
                                               "error:the events socket "})  # fmt: skip
            pcm = await http.ws_connect(peers[3].socket_url("/ws/audio"))
            await pcm.send_str(json.dumps({"type": "format", "sample_rate": 16000}))
            await pcm.send_bytes((speech(0.5)[::3] * 32767).astype("<i2").tobytes())
            await pcm.send_bytes(b"\x01")  # half a sample: the worker answers through the front
            reply = await pcm.receive_json(timeout=10)
            assert reply["type"] == "error" and "whole" in reply["message"]
            await flood_is_held_back(url, pcm, worker=peers[3].session[1])
            refused = on["w0"].socket_url("/ws/audio").replace("ws", "http", 1)
            async with http.get(refused) as r:  # the worker's refusal, through the front
                assert r.status == 409 and "microphone" in (await r.json())["error"]
            async with http.get(f"{url}/ws?session={peers[0].session}&key=wrong") as r:
                assert r.status == 404 and "no such session" in (await r.json())["error"]

            await asyncio.gather(*(p.close() for p in peers))
            assert await until(lambda: _zero(url), 20), await sessions_per_worker(url)
            for ws in [*sockets, pcm]:  # the sessions' sockets were closed by their workers
                assert await closed_by_server(ws) == 1000

    asyncio.run(run())


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_while_the_other_keeps_streaming(
    front: ServerProcess,
) -> None:
    url = front.url

    async def run() -> None:
        assert await until(lambda: _zero(url), 20)
        peers = [AvatarPeer(url, speech(3.0), summarize=lambda _: None) for _ in range(2)]
        for p in peers:
            await p.connect(timeout_s=60)
        survivor, victim = sorted(peers, key=lambda p: p.session)  # w0..., w1...
        assert (survivor.session[:2], victim.session[:2]) == ("w0", "w1")
        dead = (await get(url, "/readyz"))["workers"][1]["pid"]
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(victim.socket_url("/ws"))
            os.kill(dead, signal.SIGKILL)
            assert await closed_by_server(ws) == 1001  # its socket through the front ends too

            async def replaced() -> bool:
                w = (await get(url, "/readyz"))["workers"][1]
                return bool(w["up"] and w["restarts"] == 1 and w["pid"] != dead)

            assert await until(replaced, 90), await get(url, "/readyz")
            async with http.get(victim.socket_url("/ws").replace("ws", "http", 1)) as r:
                assert r.status == 404
        before = len(survivor.received.video)
        # the other worker never stopped: its session's frames go on, each missing one counted
        assert await wait_until(lambda: len(survivor.received.video) > before + 10)
        assert_accounted(survivor.received.video, survivor.received.messages)
        assert await sessions_per_worker(url) == [1, 0]
        again = AvatarPeer(url, speech(1.0), summarize=lambda _: None)
        await again.connect(timeout_s=60)
        assert again.session.startswith("w1.")  # the new worker takes sessions
        await asyncio.gather(*(p.close() for p in [*peers, again]))
        assert await until(lambda: _zero(url), 20), await sessions_per_worker(url)
        metrics = await get(url, "/metrics")
        assert 'avatar_worker_restarts_total{worker="1"} 1.0' in metrics

    asyncio.run(run())


async def flood_is_held_back(url: str, pcm: aiohttp.ClientWebSocketResponse, worker: str) -> None:
    """PCM sent as fast as the socket takes it: the worker queues at most
    ``max_audio_ahead_s`` and stops reading, and the front relays no faster than that (what
    is in flight is bounded by socket buffers, not by the front's memory)."""
    pushed = [0]

    async def flood() -> None:
        block = bytes(32000)  # 1 s at 16 kHz
        while True:
            await pcm.send_bytes(block)
            pushed[0] += len(block)

    task = asyncio.create_task(flood())
    await asyncio.sleep(2.0)
    first = pushed[0]
    await asyncio.sleep(2.0)
    task.cancel()
    assert first > 0 and pushed[0] - first < 4 << 20, (first, pushed[0])  # unbounded: GB
    metrics = await get(url, "/metrics")
    key = f'avatar_queue_depth{{queue="audio_in_s",worker="{worker}"}} '
    (queued,) = [float(line[len(key) :]) for line in metrics.splitlines() if line.startswith(key)]
    assert 1.0 < queued <= 4.0 + 1.0, queued  # max_audio_ahead_s + the message read last


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Reads what is left until the server closes the socket; its close code."""
    async with asyncio.timeout(10):
        while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            pass
    return ws.close_code  # (the client answered the close itself: autoclose)


async def _zero(url: str) -> bool:
    return await sessions_per_worker(url) == [0, 0]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _parent(int(entry.name)) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found
