"""``avatar serve``: the web pages, signalling (``POST /offer``) and the session sockets.

Routes:
- ``GET /`` and static files: ``web/`` (demo page, embed example, the JS client).
- ``GET /api/avatars``: the bundled avatar names and the default; ``GET /api/ice``: the ICE
  servers a page should use (short-lived TURN credentials when ``server.turn_urls`` is set).
- ``POST /offer``: ``{"sdp", "type": "offer", "avatar"?, "audio"?: "mic" | "none"}`` ->
  ``{"sdp", "type": "answer", "session", "key"}``. ``key`` opens the session's sockets.
- ``GET /ws?session=ID&key=KEY``: trickle ICE from the page, session events to the page.
- ``GET /ws/audio?session=ID&key=KEY``: PCM input for text-to-speech or an agent (sessions
  opened with ``"audio": "none"``): a text ``{"type": "format", "sample_rate", "channels"}``
  first, then binary s16le messages; ``{"type": "clear"}`` interrupts. At most
  ``server.limits.max_audio_ahead_s`` of audio waits ahead of playout: the socket is not read
  while the session is that far ahead (backpressure).
- ``GET /healthz`` (alive), ``GET /readyz`` (503 while full or draining), ``GET /metrics``.

Every refusal is a JSON ``{"error": message}`` with a 4xx status (401 token, 403 origin, 404
unknown session or avatar, 413 too large, 415 not JSON, 429 rate, 503 full with
``Retry-After``); a 500 says only "internal error" and the log has the rest. An offer is
checked completely (:mod:`avatar.server.offer`) and its session slot reserved before an engine
is built; engines are built in the executor, a few at a time, so a burst of offers cannot starve
running sessions. See :mod:`avatar.server.auth` for tokens and origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from avatar.audio.pcm import from_pcm16
from avatar.clock import Clock, unix_time
from avatar.config import Config
from avatar.engine.engine import AvatarEngine
from avatar.errors import AudioInputError, AvatarError
from avatar.face.store import builtin_names, resolve_avatar
from avatar.frames import AudioChunk
from avatar.memory import give_back_memory
from avatar.observe import Observer, combine
from avatar.profile.profiler import Profiler
from avatar.resources import web_root
from avatar.server.aiortc_hooks import (
    check_hooks,
    configure_ice,
    negotiate_playout_delay,
    send_playout_delay,
    shorten_audio_jitter_buffer,
    time_sender,
    tune_encoders,
)
from avatar.server.auth import OriginPolicy, bearer, load_secret, tokens_required, verify_token
from avatar.server.ice import ice_servers_for_page, rewrite_candidates, rtc_configuration
from avatar.server.limits import RateLimiter, SessionSlots
from avatar.server.logs import SESSION, quiet_bad_requests, quiet_peer_task_errors
from avatar.server.metrics import CONTENT_TYPE, ServerMetrics
from avatar.server.offer import (
    RequestError,
    check_candidate,
    check_sdp,
    parse_json,
    parse_offer,
)
from avatar.server.session import Session
from avatar.tasks import spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")
CONNECT_TIMEOUT_S = 30.0
WEB_DIR = web_root()
ORIGIN_CHECKED = ("/offer", "/ws", "/ws/audio", "/api/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EngineFactory(Protocol):
    """Builds a session's engine (blocking: the server calls it in its executor).
    ``live``: microphone input; otherwise buffered PCM (text-to-speech) that plays out in full."""

    def __call__(self, avatar: str, live: bool, observer: Observer) -> AvatarEngine: ...


class AvatarServer:
    """Sessions by id, one shared executor for every session's work. Engines come from
    ``engines`` (the composition root, ``avatar.compose.serve``, passes the real one)."""

    def __init__(
        self,
        cfg: Config,
        engines: EngineFactory,
        clock: Clock,
        executor: Executor | None = None,
        wall: Callable[[], float] = unix_time,
    ) -> None:
        self.cfg, self.engines, self.clock = cfg, engines, clock
        self.wall = wall  # Unix seconds: token expiry, TURN credentials
        sc, lim = cfg.server, cfg.server.limits
        workers = cfg.engine.workers or os.cpu_count() or 2
        self.executor = executor or ThreadPoolExecutor(workers, thread_name_prefix="engine")
        self.sessions: dict[str, Session] = {}
        self.web_dir = Path(sc.web_dir) if sc.web_dir else WEB_DIR
        self.secret = load_secret(sc.auth)
        self.require_token = tokens_required(sc)
        if self.require_token and self.secret is None:
            raise AvatarError(
                f"serving on {sc.host} needs session tokens: set AVATAR_SECRET (or "
                "server.auth.secret_file), mint tokens with `avatar token`; or bind 127.0.0.1"
            )
        self.origins = OriginPolicy(sc.auth.allowed_origins)
        self.slots = SessionSlots(sc.max_sessions)
        self.offer_rate = RateLimiter(clock, lim.offers_per_minute, lim.offer_burst)
        self.socket_rate = RateLimiter(clock, lim.sockets_per_minute, 2 * lim.offer_burst)
        self.builds = asyncio.Semaphore(lim.engine_builds)
        self.metrics = ServerMetrics(clock, lambda: self.sessions.values(), sc.max_sessions)
        self.draining = False
        self.sid_prefix = ""  # "w1." in worker 1 of `avatar serve --workers N` (the front routes)
        check_hooks()
        configure_ice(sc)
        negotiate_playout_delay(sc.playout_delay_ms)
        tune_encoders(sc.encoder)
        quiet_bad_requests()

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._guard], client_max_size=self.cfg.server.limits.max_body_kb << 10
        )
        app.router.add_get("/", self.index)
        app.router.add_get("/api/avatars", self.avatars)
        app.router.add_get("/api/ice", self.ice)
        app.router.add_get("/api/health", self.health)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/readyz", self.ready)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_post("/offer", self.offer)
        app.router.add_route("OPTIONS", "/offer", self.preflight)
        app.router.add_get("/ws", self.ws_events)
        app.router.add_get("/ws/audio", self.ws_audio)
        app.router.add_get("/{path:.+}", self.static)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        quiet_peer_task_errors(asyncio.get_running_loop())

    # -- HTTP -----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.web_dir / "index.html"
        if not page.is_file():
            raise RequestError(f"no demo page at {page} (set server.web_dir)", 404)
        return web.FileResponse(page)

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of ``web/`` (the JS client, pages); anything else is a JSON 404."""
        root = self.web_dir.resolve()
        try:
            path = (root / request.match_info["path"]).resolve()
            found = path.is_relative_to(root) and path.is_file()
        except (ValueError, OSError):  # NUL bytes, names too long
            found = False
        if not found:
            raise RequestError(f"not found: {request.path[:100]!r}", 404)
        return web.FileResponse(path)

    async def avatars(self, request: web.Request) -> web.Response:
        names = builtin_names()
        return web.json_response({"avatars": names, "default": self.cfg.render.avatar})

    async def ice(self, request: web.Request) -> web.Response:
        """ICE servers for the page (TURN credentials are worth a token)."""
        self._authenticate(request)
        servers = ice_servers_for_page(self.cfg.server, self.wall())
        return web.json_response({"iceServers": servers})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions)})

    async def ready(self, request: web.Request) -> web.Response:
        full = self.slots.used >= self.slots.capacity
        ok = not (full or self.draining)
        body = {"ready": ok, "sessions": len(self.sessions), "capacity": self.slots.capacity,
                "draining": self.draining}  # fmt: skip
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})

    async def preflight(self, request: web.Request) -> web.Response:
        """CORS preflight of an allowed cross-origin page (the guard refused the others)."""
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": "600",
        })  # fmt: skip

    async def offer(self, request: web.Request) -> web.Response:
        self._rate(self.offer_rate, request, "offers")
        self._authenticate(request)
        if request.content_type != "application/json":
            raise RequestError("POST /offer takes Content-Type: application/json", 415)
        offer = parse_offer(await request.read())
        avatar = _choose_avatar(offer.avatar, self.cfg.render.avatar)
        check_sdp(offer.sdp, self.cfg.server.limits)
        if self.draining:
            raise RequestError("the server is shutting down", 503, retry_after_s=30)
        if not self.slots.reserve():
            self.metrics.refused.labels("full").inc()
            raise RequestError(f"server full ({self.slots.capacity} sessions)", 503,
                               retry_after_s=10)  # fmt: skip
        try:
            session = await self._open_session(avatar, offer.mic)
        except BaseException:
            self.slots.release()
            raise
        try:
            answer = await self._negotiate(session, offer.sdp)
        except BaseException:
            await self._close(session)
            raise
        self.metrics.offers.labels("answered").inc()
        body = {"sdp": answer, "type": "answer", "session": session.sid, "key": session.key}
        return web.json_response(body)

    async def _open_session(self, avatar: str, mic: bool) -> Session:
        cfg = self.cfg
        sid = self.sid_prefix + secrets.token_urlsafe(9)
        SESSION.set(sid)  # this handler's task and every task it starts log with the id
        profiler = (
            Profiler(self.clock, cfg.motion.fps, sid, keep=3000) if cfg.server.profile else None
        )
        observer = combine(*(o for o in (profiler, self.metrics.stages) if o is not None))
        loop = asyncio.get_running_loop()
        self.metrics.collector.building += 1
        try:
            async with self.builds:
                engine = await loop.run_in_executor(
                    self.executor, self.engines, avatar, mic, observer
                )
        finally:
            self.metrics.collector.building -= 1
        pc = RTCPeerConnection(rtc_configuration(cfg.server, self.wall()))
        session = Session(
            sid, pc, engine, self.clock, self.executor, avatar=avatar, mic=mic,
            stats_interval_s=cfg.server.stats_interval_s, observer=observer,
            limits=cfg.server.limits, profile=profiler is not None, reap_s=cfg.server.reap_s,
        )  # fmt: skip
        self.sessions[sid] = session
        session.on_closed = self._forget
        self._watch(session)
        return session

    def _watch(self, session: Session) -> None:
        pc = session.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: %s", session.sid, pc.connectionState)
            if pc.connectionState == "connected":
                session.start()
            elif pc.connectionState in ("failed", "closed"):
                await self._close(session)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and session.mic:
                shorten_audio_jitter_buffer(pc, track, self.cfg.server.audio_jitter_packets)
                session.read_microphone(track)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            session.attach_channel(channel)

        session.add_task(spawn(self._expire_unconnected(session), f"expire-{session.sid}"))

    async def _negotiate(self, session: Session, sdp: str) -> str:
        pc = session.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        except Exception as exc:  # aiortc raises ValueError and others on SDP it cannot take
            raise RequestError(f"SDP offer refused: {str(exc)[:160]}") from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise RequestError("the offer must receive video: addTransceiver('video')")
        if "audio" not in kinds:
            raise RequestError("the offer must have an audio transceiver (sendrecv or recvonly)")
        video_sender = pc.addTrack(session.video)
        pc.addTrack(session.audio)
        time_sender(video_sender, session.video, session.observer)
        if self.cfg.server.playout_delay_ms is not None:
            send_playout_delay(video_sender, *self.cfg.server.playout_delay_ms)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # an offer aiortc took but cannot answer
            raise RequestError(f"SDP offer cannot be answered: {str(exc)[:160]}") from None
        return rewrite_candidates(pc.localDescription.sdp, self.cfg.server.ice_public_ip)

    async def _expire_unconnected(self, session: Session) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if session.pc.connectionState != "connected" and not session.closed.is_set():
            log.info("session %s never connected: closed", session.sid)
            await self._close(session)

    def _forget(self, session: Session) -> None:
        if self.sessions.pop(session.sid, None) is not None:
            self.slots.release()
            self.metrics.closed(session)
            self.metrics.faults.inc(session.engine.faults_total)
            spawn(self._give_back_memory(), "give-back-memory")

    async def _give_back_memory(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, give_back_memory)

    async def _close(self, session: Session) -> None:
        try:
            await session.close()
        finally:
            self._forget(session)

    async def drain(self, timeout_s: float) -> None:
        """Graceful shutdown: no new sessions; the open ones are told and get ``timeout_s`` to
        finish before they are closed."""
        self.draining = self.metrics.collector.draining = True
        for s in list(self.sessions.values()):
            s.send({"type": "shutdown", "within_s": timeout_s})
        step = NS_PER_S // 5
        deadline = self.clock.now_ns() + round(timeout_s * NS_PER_S)
        while self.sessions and self.clock.now_ns() < deadline:
            await self.clock.sleep_until(self.clock.now_ns() + step)
        await self._shutdown(None)

    async def _shutdown(self, app: web.Application | None) -> None:
        await asyncio.gather(*(self._close(s) for s in list(self.sessions.values())))

    # -- the guard around every route -----------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Origin policy and CORS, then the handler; every refusal as a JSON error."""
        cors = None
        try:
            if request.path.startswith(ORIGIN_CHECKED):
                cors = self.origins.check(request.headers.get("Origin"), request.host)
            response = await handler(request)
        except RequestError as exc:
            self.metrics.refused.labels(str(exc.status)).inc()
            response = _error(str(exc), exc.status, exc.retry_after_s)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.reason, exc.status)
        except AvatarError as exc:  # e.g. an avatar folder that fails to load
            log.error("%s %s: %s", request.method, request.path, exc)
            response = _error(f"the server could not do this: {str(exc)[:200]}", 500)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = _error("internal error", 500)
        if cors is not None and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = cors
            response.headers["Vary"] = "Origin"
        return response

    def _rate(self, limiter: RateLimiter, request: web.Request, what: str) -> None:
        retry = limiter.take(request.remote or "?")
        if retry > 0:
            self.metrics.refused.labels("rate").inc()
            raise RequestError(f"too many {what} from your address: retry in {retry:.0f} s",
                               429, retry_after_s=retry)  # fmt: skip

    def _authenticate(self, request: web.Request) -> None:
        if not self.require_token:
            return
        token = bearer(request.headers.get("Authorization")) or request.query.get("token")
        if not token:
            raise RequestError("this server needs a token: Authorization: Bearer <token> "
                               "(mint one with `avatar token`)", 401)  # fmt: skip
        assert self.secret is not None
        verify_token(self.secret, token, self.wall())

    # -- WebSockets -----------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session:
        """The session named by ``session`` and opened by its ``key`` (404 for either wrong:
        an id alone reveals nothing)."""
        self._rate(self.socket_rate, request, "sockets")
        sid, key = request.query.get("session", ""), request.query.get("key", "")
        session = self.sessions.get(sid)
        if session is None or not hmac.compare_digest(key.encode(), session.key.encode()):
            raise RequestError("no such session, or a wrong key (POST /offer first)", 404)
        SESSION.set(sid)
        return session

    async def ws_events(self, request: web.Request) -> web.WebSocketResponse:
        session = self._session(request)
        lim = self.cfg.server.limits
        ws = web.WebSocketResponse(heartbeat=self.cfg.server.reap_s / 2,
                                   max_msg_size=lim.max_message_kb << 10)  # fmt: skip
        await ws.prepare(request)
        session.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._event_message(session, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    session.send_error("the events socket takes JSON text messages")
        finally:
            session.sockets.discard(ws)
            if not session.sockets:  # the page that opened it is gone (or closed its client)
                await session.on_gone("events socket closed")
        return ws

    async def _event_message(self, session: Session, text: str) -> None:
        if not session.admit_message(text):
            return
        data = _json_or_none(text)
        if data is None or data.get("type") != "candidate":
            session.handle_message(text, admitted=True)
            return
        try:
            await _add_candidate(session, data.get("candidate"), self.cfg.server.limits)
        except RequestError as exc:
            session.send_error(str(exc))

    async def ws_audio(self, request: web.Request) -> web.WebSocketResponse:
        session = self._session(request)
        if session.mic:
            raise RequestError("this session takes its audio from the microphone; "
                               "open it with \"audio\": \"none\" to stream PCM", 409)  # fmt: skip
        lim = self.cfg.server.limits
        ws = web.WebSocketResponse(max_msg_size=lim.max_audio_message_kb << 10)
        await ws.prepare(request)
        session.audio_sockets.add(ws)
        reader = PcmReader()
        async for msg in ws:
            if session.closed.is_set():
                break
            try:
                if msg.type == WSMsgType.TEXT:
                    if reader.control(msg.data, session) == "end":
                        break
                elif msg.type == WSMsgType.BINARY:
                    session.engine.push_audio(reader.chunk(msg.data))
                    await session.engine.wait_for_room(lim.max_audio_ahead_s)
            except AudioInputError as exc:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_json({"type": "error", "message": str(exc)})
        session.audio_sockets.discard(ws)
        return ws


class PcmReader:
    """The PCM socket's state: its format, then s16le blocks -> engine audio chunks."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.channels = 1

    def control(self, text: str, session: Session) -> str:
        msg = _json_or_none(text)
        kind = msg.get("type") if msg else None
        if kind == "format" and msg is not None:
            rate, channels = msg.get("sample_rate"), msg.get("channels", 1)
            if type(rate) is not int or not 8000 <= rate <= 192000:
                raise AudioInputError(f"sample_rate must be an integer 8000-192000, got "
                                      f"{str(rate)[:20]!r}")  # fmt: skip
            if type(channels) is not int or channels not in (1, 2):
                raise AudioInputError(f"channels must be 1 or 2, got {str(channels)[:20]!r}")
            self.rate, self.channels = rate, channels
        elif kind == "clear":
            session.clear()
        elif kind != "end":
            raise AudioInputError(f"unknown control message {text[:60]!r}")
        return str(kind)

    def chunk(self, data: bytes) -> AudioChunk:
        if self.rate is None:
            raise AudioInputError('send {"type": "format", "sample_rate": N} before audio')
        if len(data) % (2 * self.channels):
            raise AudioInputError("binary messages must hold whole s16le sample frames")
        pcm = from_pcm16(np.frombuffer(data, "<i2"))
        mono = pcm.reshape(-1, self.channels).mean(axis=1)
        return AudioChunk(mono.astype(np.float32), self.rate, 0)


def _choose_avatar(asked: str | None, default: str) -> str:
    """A page may pick a bundled avatar or the server's default, never a folder path."""
    avatar = asked or default
    if avatar not in builtin_names() and avatar != default:
        names = ", ".join(builtin_names())
        raise RequestError(f"unknown avatar {avatar[:60]!r}: choose one of {names}", 404)
    try:
        resolve_avatar(avatar)
    except AvatarError as exc:
        raise RequestError(str(exc), 404) from None
    return avatar


async def _add_candidate(session: Session, cand: Any, limits: Any) -> None:
    """A trickled candidate: ``{"candidate": str, "sdpMid"?: str, "sdpMLineIndex"?: int}`` or
    an empty/None one (end of candidates)."""
    if cand is None or cand == {} or (isinstance(cand, dict) and cand.get("candidate") == ""):
        return
    if not isinstance(cand, dict) or not isinstance(cand.get("candidate"), str):
        raise RequestError('a candidate is {"candidate": "candidate:...", "sdpMid": ...}')
    mid, index = cand.get("sdpMid"), cand.get("sdpMLineIndex")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
        raise RequestError("sdpMid must be a short string")
    if index is not None and (type(index) is not int or not 0 <= index < 64):
        raise RequestError("sdpMLineIndex must be a small integer")
    session.candidates += 1
    if session.candidates > limits.max_candidates:
        raise RequestError(f"too many ICE candidates (at most {limits.max_candidates})")
    text = cand["candidate"][:512].removeprefix("candidate:")
    check_candidate(text)
    ice: RTCIceCandidate = candidate_from_sdp(text)
    ice.sdpMid, ice.sdpMLineIndex = mid, index
    try:
        await session.pc.addIceCandidate(ice)
    except Exception as exc:  # aiortc: no transceiver with that mid, closed connection...
        raise RequestError(f"ICE candidate refused: {str(exc)[:120]}") from None


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        data = parse_json(text, "")
    except RequestError:
        return None
    return data if isinstance(data, dict) else None


def _error(message: str, status: int, retry_after_s: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return web.json_response({"error": message}, status=status, headers=headers)
