"""Safe to put on a network: offers checked before engines, limits, tokens, origins, session
keys, metrics, health, drain, reaping. Unit checks first, then a real server with aiortc peers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import logging
import time
from concurrent.futures import Executor
from typing import Any

import aiohttp
import numpy as np
import pytest

from avatar.clock import Clock, FakeClock, unix_time
from avatar.config import LimitsConfig
from avatar.engine import AvatarEngine
from avatar.errors import AudioInputError, RequestError
from avatar.observe import Observer
from avatar.server.auth import OriginPolicy, mint_token, verify_token
from avatar.server.limits import RateLimiter, SessionSlots
from avatar.server.logs import SESSION, JsonFormatter, SessionFilter
from avatar.server.offer import check_sdp, parse_offer
from avatar.server.pcm_socket import PcmReader
from avatar.server.sessions import EngineFactory
from avatar.units import NS_PER_S
from tests.fuzz_harness import real_offer
from tests.test_server import has_stats, running_server, speech
from tests.timeline import assert_accounted, timeline, wait_until

SECRET = b"0123456789abcdef-test-secret"


class RecordList(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    return asyncio.run(real_offer())


# -- units ------------------------------------------------------------------------------------


def test_tokens_are_signed_and_expire() -> None:
    token = mint_token(SECRET, 60, now=1000.0, subject="page")
    assert verify_token(SECRET, token, now=1059.0).subject == "page"
    for bad, now in ((token, 1061.0), (token + "x", 1000.0), ("a.b", 1000.0), ("", 1000.0),
                     (mint_token(b"another-secret-of-16", 60, 1000.0), 1000.0)):  # fmt: skip
        with pytest.raises(RequestError) as err:
            verify_token(SECRET, bad, now)
        assert err.value.status == 401


def test_origins_own_listed_and_others() -> None:
    policy = OriginPolicy(["https://app.example.com"])
    assert policy.check(None, "avatar.example.com") is None  # not a browser
    assert policy.check("https://avatar.example.com", "avatar.example.com") is None  # own
    assert policy.check("https://app.example.com", "x") == "https://app.example.com"
    with pytest.raises(RequestError) as err:
        policy.check("https://evil.example", "avatar.example.com")
    assert err.value.status == 403
    assert OriginPolicy(["*"]).check("https://evil.example", "x") == "https://evil.example"


def test_rate_limiter_bursts_then_refills_per_address() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, per_minute=60, burst=3)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)  # one token a second
    assert limiter.take("b") == 0.0  # another address is not affected
    clock.advance(1_000_000_000)
    assert limiter.take("a") == 0.0
    slots = SessionSlots(2)
    assert [slots.reserve(), slots.reserve(), slots.reserve()] == [True, True, False]
    slots.release()
    assert slots.reserve()


def _mutations(sdp: str) -> dict[str, str]:
    lines = sdp.split("\r\n")
    media = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    cand = "a=candidate:1 1 udp 2130706431 10.0.0.1 4000 typ host"
    return {
        "no fingerprint": "\r\n".join(x for x in lines if not x.startswith("a=fingerprint")),
        "no mid": "\r\n".join(x for x in lines if not x.startswith("a=mid")),
        "same mid twice": sdp.replace("a=mid:1", "a=mid:0"),
        "bad mid": sdp.replace("a=mid:1", "a=mid:" + "x" * 40),
        "bogus media": sdp.replace("m=video", "m=bogus"),
        "200 media sections": "\r\n".join(lines[:media] + lines[media:] * 200),
        "NUL byte": sdp.replace("a=mid:0", "a=mid:\x000"),
        "3000 candidates": sdp.replace("a=mid:0", "a=mid:0\r\n" + "\r\n".join([cand] * 3000)),
        "candidate port": sdp.replace("a=mid:0", "a=mid:0\r\n" + cand.replace("4000", "70000")),
        "candidate garbage": sdp.replace("a=mid:0", "a=mid:0\r\na=candidate:x y z"),
        "no ice-pwd": "\r\n".join(x for x in lines if not x.startswith("a=ice-pwd")),
        "no direction": sdp.replace("a=sendrecv\r\n", "", 1),
        "BUNDLE names a missing mid": sdp.replace("a=mid:0", "a=mid:x"),
        "not SDP": "hello",
    }


def test_offers_no_session_could_answer_are_refused_before_any_work(offer_sdp: str) -> None:
    limits = LimitsConfig()
    check_sdp(offer_sdp, limits)  # a real aiortc offer passes
    for name, sdp in _mutations(offer_sdp).items():
        with pytest.raises(RequestError) as err:
            check_sdp(sdp, limits)
        assert err.value.status == 400, name
    for raw in (b"[" * 100_000, b"\xff\xfe", b"{}", b'{"sdp": 1, "type": "offer"}', b"[]"):
        with pytest.raises(RequestError):
            parse_offer(raw)
    assert (
        parse_offer(json.dumps({"sdp": "v=0", "type": "offer", "audio": "none"}).encode()).mic
        is False
    )


def _send_format(reader: PcmReader, **fields: object) -> None:
    cleared: list[bool] = []
    reader.control(json.dumps({"type": "format", **fields}), lambda: cleared.append(True))
    assert not cleared  # a format message interrupts nothing


def test_pcm_format_takes_integers_only() -> None:
    reader = PcmReader()
    bad: list[dict[str, object]] = [
        {"sample_rate": 16000, "channels": 1.0},
        {"sample_rate": 16000, "channels": True},
        {"sample_rate": 16000.0},
        {"sample_rate": True},
        {"sample_rate": "16000"},
    ]
    for fmt in bad:
        with pytest.raises(AudioInputError):
            _send_format(reader, **fmt)
    _send_format(reader, sample_rate=16000, channels=2)
    assert len(reader.chunk(b"\x00\x00" * 8).samples) == 4


def test_log_lines_carry_the_session_of_the_task_that_wrote_them() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SessionFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("avatar.test.session")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def session_work(sid: str) -> None:
        SESSION.set(sid)
        await asyncio.sleep(0)
        log.info("working")

    async def main() -> None:
        await asyncio.gather(session_work("s1"), session_work("s2"))
        log.info("outside")

    try:
        asyncio.run(main())
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(x["session"] for x in lines) == ["-", "s1", "s2"]


# -- a real server ----------------------------------------------------------------------------


async def _post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with http.post(f"{url}/offer", json=body, **kw) as r:
        return r.status, (await r.json(), r.headers)


@pytest.mark.slow
def test_the_cap_holds_under_a_burst_of_offers(offer_sdp: str) -> None:
    async def run() -> None:
        async with running_server("server.max_sessions=3", "server.limits.offer_burst=100") as (
            url,
            server,
        ):
            async with aiohttp.ClientSession() as http:
                body = {"sdp": await real_offer(), "type": "offer"}
                results = await asyncio.gather(*(_post(http, url, body) for _ in range(12)))
                statuses = sorted(s for s, _ in results)
                assert statuses == [200] * 3 + [503] * 9, statuses
                full = next(r for s, r in results if s == 503)
                assert "full" in full[0]["error"] and int(full[1]["Retry-After"]) > 0
                assert len(server.sessions) == 3 and server.sessions.slots.used == 3
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 503  # full: a load balancer sends the next one elsewhere
            for s in list(server.sessions.values()):
                await server.sessions.close(s)
            assert server.sessions.slots.used == 0 and not server.sessions

    asyncio.run(run())


@pytest.mark.slow
def test_tokens_origins_and_session_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_SECRET", SECRET.decode())

    async def run() -> None:
        overrides = ("server.auth.require_token=always",
                     "server.auth.allowed_origins=['https://app.example.com']")  # fmt: skip
        async with running_server(*overrides) as (url, server), aiohttp.ClientSession() as http:
            body = {"sdp": await real_offer(), "type": "offer"}
            import time

            good = mint_token(SECRET, 60, time.time())
            expired = mint_token(SECRET, -1, time.time())
            assert (await _post(http, url, body))[0] == 401
            assert (await _post(http, url, body, headers={"Authorization": "Bearer x.y"}))[0] == 401
            bad = await _post(http, url, body, headers={"Authorization": f"Bearer {expired}"})
            assert bad[0] == 401 and "expired" in bad[1][0]["error"]
            async with http.get(f"{url}/api/ice") as r:
                assert r.status == 401
            # a page elsewhere posting text/plain (no preflight) is refused by its origin
            evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
            async with http.post(f"{url}/offer", data=json.dumps(body), headers=evil) as r:
                assert r.status == 403 and "origin" in (await r.json())["error"]
            plain = {"Content-Type": "text/plain", "Authorization": f"Bearer {good}"}
            async with http.post(f"{url}/offer", data=json.dumps(body), headers=plain) as r:
                assert r.status == 415
            pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
            async with http.options(f"{url}/offer", headers=pre) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            async with http.options(
                f"{url}/offer", headers={"Origin": "https://evil.example"}
            ) as r:
                assert r.status == 403
            status, (answer, _) = await _post(
                http, url, body, headers={"Authorization": f"Bearer {good}"}
            )
            assert status == 200 and answer["key"] and answer["key"] != answer["session"]
            sid, key = answer["session"], answer["key"]
            ws = url.replace("http", "ws")
            for query in (f"session={sid}", f"session={sid}&key=wrong", "session=x&key=" + key):
                async with http.get(f"{url}/ws?{query}") as r:
                    assert r.status == 404
            with pytest.raises(aiohttp.WSServerHandshakeError) as hs:
                await http.ws_connect(f"{ws}/ws?session={sid}&key={key}",
                                      headers={"Origin": "https://evil.example"})  # fmt: skip
            assert hs.value.status == 403
            async with http.ws_connect(f"{ws}/ws?session={sid}&key={key}") as sock:
                await sock.send_str("x" * 40_000)  # over the 16 KiB message limit
                assert sock.closed or (await sock.receive()).type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                )
            await asyncio.sleep(0.2)
            assert sid not in server.sessions  # its only socket closed: the session is over

    asyncio.run(run())


@pytest.mark.slow
def test_metrics_health_faults_counted_and_drain() -> None:
    from avatar.testing.peer import AvatarPeer

    async def run() -> None:
        async with running_server("server.max_sessions=1") as (url, server):
            peer = AvatarPeer(url, speech(4.0))
            await peer.connect()
            frames = await wait_until(lambda: len(peer.received.video) >= 50 and has_stats(peer))
            assert frames, "fewer than 50 frames and no stats message came"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/metrics") as r:
                    text = await r.text()
                async with http.get(f"{url}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"{url}/readyz") as r:
                    assert r.status == 503  # the one slot is taken
            metrics = _parse_metrics(text)
            assert metrics["avatar_sessions_active"] == 1
            assert metrics["avatar_frames_frames_total"] >= 50
            for stage in ("render", "colour", "encode", "send", "motion", "vad"):
                assert metrics[f'avatar_stage_seconds_count{{stage="{stage}"}}'] > 0, stage
            assert metrics["avatar_latency_seconds_count"] > 0
            assert metrics["process_resident_memory_bytes"] > 50e6
            assert f'avatar_session_fps{{session="{peer.session}"}}' in metrics
            await server.drain(5.0)
            assert any(m.get("type") == "shutdown" for m in peer.received.messages)
            assert not server.sessions and server.sessions.slots.used == 0
            await peer.close()

    asyncio.run(run())


class ShiftedClock:
    """The monotonic clock plus an offset the test moves forward: the server's timers see time
    pass that the machine never took (sleepers notice a shift within 20 ms)."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def now_ns(self) -> int:
        return time.monotonic_ns() + self.offset_ns

    def shift(self, dt_ns: int) -> None:
        self.offset_ns += dt_ns

    async def sleep_until(self, t_ns: int) -> None:
        while (left := t_ns - self.now_ns()) > 0:
            await asyncio.sleep(min(left / NS_PER_S, 0.02))


_: type[Clock] = ShiftedClock  # mypy checks that the fake is the real protocol


@pytest.mark.slow
def test_a_vanished_peer_is_freed_within_the_reap_time_and_pcm_is_bounded() -> None:
    from avatar.compose.serve import make_server
    from avatar.testing.peer import AvatarPeer

    clock = ShiftedClock()

    async def run() -> None:
        async with running_server(make=lambda cfg: make_server(cfg, clock)) as (url, server):
            gone = AvatarPeer(url, speech(3.0))
            await gone.connect()
            reap_ns = round(server.cfg.server.reap_s * NS_PER_S)
            gone.vanish()
            vanished = clock.now_ns()
            await asyncio.sleep(0.3)  # what it sent before it went lands
            # on the server's clock: 1 s short of the reap time it stays, past it it goes
            clock.shift(reap_ns - NS_PER_S)
            await asyncio.sleep(0.3)
            assert gone.session in server.sessions, "reaped before reap_s of silence"
            clock.shift(NS_PER_S)
            freed = await wait_until(lambda: gone.session not in server.sessions)
            silent_s = (clock.now_ns() - vanished) / NS_PER_S  # by the server's clock
            assert freed and silent_s < reap_ns / NS_PER_S + 2, f"reaped after {silent_s:.1f} s"
            await gone.close()
            # a session that never connects: its PCM socket stops reading when 4 s are queued
            idle = AvatarPeer(url, None)
            await idle.send_offer()
            block = (np.sin(np.arange(32000) / 5) * 9000).astype("<i2").tobytes()  # 2/3 s
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(idle.socket_url("/ws/audio")) as ws,
            ):
                await ws.send_str(json.dumps({"type": "format", "sample_rate": 48000}))

                async def flood() -> None:
                    for _ in range(100):  # 67 s of audio (kernel socket buffers take a few MB)
                        await ws.send_bytes(block)

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flood(), 3.0)
                await asyncio.sleep(0.5)
                engine = server.sessions[idle.session].engine
                ahead = server.cfg.server.limits.max_audio_ahead_s
                assert 1.0 < engine.pending_audio_s <= ahead + 2 / 3  # + the last message
            await server.sessions.close(server.sessions[idle.session])
            assert engine.pending_audio_s == 0 or engine._inbox.empty()
            await idle.close()

    asyncio.run(run())


def _parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.slow
def test_sigterm_drains_and_exits() -> None:
    import signal

    from avatar.testing.browser import server_process
    from avatar.testing.peer import AvatarPeer

    drain_s = 2.0
    told_at: list[int] = []  # frames received when the shutdown message came

    async def run(server: Any) -> tuple[AvatarPeer, int]:
        peer = AvatarPeer(server.url, speech(2.0))
        await peer.connect()
        # the data channel is open once "ready" arrives
        assert await wait_until(
            lambda: any(m.get("type") == "ready" for m in peer.received.messages)
        )
        assert peer.channel is not None

        def on_message(message: object) -> None:
            if not told_at and '"shutdown"' in str(message):
                told_at.append(len(peer.received.video))

        peer.channel.on("message", on_message)
        server.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 15)
        await peer.close()
        return peer, rc

    with server_process("--set", f"server.drain_s={drain_s}") as server:
        peer, rc = asyncio.run(run(server))
    assert rc == 0
    # waited for the session, then stopped: after the notice, the session streamed for the
    # drain's time on the media timeline (less the last frames in flight at the close, plus
    # those that were on their way when the notice left), no longer
    assert told_at, "no shutdown message"
    t = timeline(peer.received.video[told_at[0] :], peer.received.messages)
    assert drain_s / 2 <= t.span_s <= drain_s + 1.0, t
    log = "\n".join(server.log)
    assert "draining 1 sessions" in log and "Traceback" not in log
    assert any(m.get("type") == "shutdown" for m in peer.received.messages)


def _gate_app(*routes: tuple[str, str, Any]) -> Any:
    """A bare application behind a real :class:`Gate` (no sessions, no engines)."""
    from aiohttp import web

    from avatar.clock import MonotonicClock
    from avatar.config import ServerConfig
    from avatar.server.gate import Gate
    from avatar.server.logs import quiet_bad_requests
    from avatar.server.metrics import ServerMetrics

    quiet_bad_requests()  # as the composition root does
    clock = MonotonicClock()
    gate = Gate(ServerConfig(), clock, unix_time, ServerMetrics(clock, tuple, 1).refused)
    app = web.Application(middlewares=[gate.middleware])
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app


def test_an_unexpected_error_is_a_bare_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals /etc/passwd")

    async def run() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(_gate_app(("GET", "/broken", broken)))) as client:
            r = await client.get("/broken")
            assert (await client.get("/nowhere")).status == 404
            return r.status, await r.json()

    status, body = asyncio.run(run())
    assert status == 500 and body == {"error": "internal error"}
    assert "secret internals" in caplog.text  # the log has it, the client does not


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_body_that_does_not_decode_is_a_400_and_one_log_line(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``Content-Encoding: gzip`` on bytes that are not gzip: the client's mistake (aiohttp
    raises inside ``request.read()``), answered like any other, logged once without a trace."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def reads(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    async def run() -> tuple[int, dict[str, Any], int]:
        async with TestClient(TestServer(_gate_app(("POST", "/offer", reads)))) as client:
            headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
            r = await client.post("/offer", data=b'{"sdp": "v=0"}', headers=headers)
            good = await client.post("/offer", data=gzip.compress(b"{}"),
                                     headers={**headers, "Content-Encoding": "gzip"})  # fmt: skip
            return r.status, await r.json(), good.status

    with caplog.at_level(logging.WARNING):
        status, body, good = asyncio.run(run())
    assert status == 400 and body == {"error": f"the body does not decode as Content-Encoding: "
                                               f"{encoding}"}  # fmt: skip
    assert good == 200  # a body that decodes still goes through
    lines = [r for r in caplog.records if "unreadable body" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "Traceback" not in caplog.text


@pytest.mark.slow
def test_a_model_fault_mid_session_is_an_error_event_and_the_stream_goes_on() -> None:

    from avatar.compose.engines import build_engine
    from avatar.compose.serve import make_server
    from avatar.config import Config
    from avatar.motion.runtime import load_motion_backend
    from avatar.server.app import AvatarServer
    from avatar.testing.peer import AvatarPeer
    from tests.test_engine import FlakyBackend

    made: list[FlakyBackend] = []

    def flaky_server(cfg: Config) -> AvatarServer:
        def flaky_engines(clock: Clock, executor: Executor) -> EngineFactory:
            def engines(avatar: str, live: bool, observer: Observer) -> AvatarEngine:
                made.append(FlakyBackend(load_motion_backend(cfg.motion), 40, 70))
                return build_engine(cfg, clock, live=live, executor=executor, observer=observer,
                                    backend=made[-1])  # fmt: skip

            return engines

        return make_server(cfg, engines=flaky_engines)

    async def run() -> AvatarPeer:
        async with running_server(make=flaky_server) as (url, server):
            peer = AvatarPeer(url, speech(4.0))
            await peer.connect()
            faults_over = await wait_until(lambda: bool(made) and made[0].calls > 70)
            assert faults_over, f"the model was called {made[0].calls if made else 0} times"
            before = len(peer.received.video)
            streaming = await wait_until(lambda: len(peer.received.video) > before + 20)
            assert streaming, "no frames after the model fault"
            assert len(server.sessions) == 1
            await peer.close()
            return peer

    handler = RecordList()
    handler.addFilter(SessionFilter())
    logging.getLogger("avatar.engine").addHandler(handler)
    try:
        peer = asyncio.run(run())
    finally:
        logging.getLogger("avatar.engine").removeHandler(handler)
    errors = [m["message"] for m in peer.received.messages if m.get("type") == "error"]
    assert errors and all("motion model failed" in e for e in errors)
    assert_accounted(peer.received.video, peer.received.messages)  # the timeline went on
    failed = [r for r in handler.records if "motion model failed" in r.getMessage()]
    assert failed and {getattr(r, "session", None) for r in failed} == {peer.session}
