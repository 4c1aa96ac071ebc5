"""``avatar serve``: the web pages, signalling (``POST /offer``) and the session sockets.

Routes:
- ``GET /`` and static files: ``web/`` (demo page, embed example, the JS client).
- ``GET /api/avatars``: the bundled avatar names and the default; ``GET /api/health``: sessions.
- ``POST /offer``: ``{"sdp", "type": "offer", "avatar"?, "audio"?: "mic" | "none"}`` ->
  ``{"sdp", "type": "answer", "session"}``; a bad request gets ``{"error": message}``.
- ``GET /ws?session=ID``: trickle ICE from the page, session events to the page.
- ``GET /ws/audio?session=ID``: PCM input for text-to-speech or an agent (sessions opened with
  ``"audio": "none"``): a text ``{"type": "format", "sample_rate", "channels"}`` first, then
  binary s16le messages; ``{"type": "clear"}`` interrupts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from avatar.audio.pcm import from_pcm16
from avatar.clock import Clock
from avatar.config import Config
from avatar.engine.engine import AvatarEngine
from avatar.errors import AudioInputError, AvatarError
from avatar.face.store import builtin_names, resolve_avatar
from avatar.frames import AudioChunk
from avatar.observe import NULL_OBSERVER, Observer
from avatar.profile.profiler import Profiler
from avatar.server.aiortc_hooks import (
    check_hooks,
    configure_ice,
    shorten_audio_jitter_buffer,
    time_sender,
)
from avatar.server.ice import rewrite_candidates, rtc_configuration
from avatar.server.session import Session
from avatar.tasks import spawn

log = logging.getLogger("avatar.server")
CONNECT_TIMEOUT_S = 30.0
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


class EngineFactory(Protocol):
    """Builds a session's engine (blocking: loads models; the server calls it in its executor).
    ``live``: microphone input; otherwise buffered PCM (text-to-speech) that plays out in full."""

    def __call__(self, avatar: str, live: bool, observer: Observer) -> AvatarEngine: ...


class RequestError(Exception):
    """A client mistake: answered with ``{"error": message}`` and this HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AvatarServer:
    """Sessions by id, one shared executor for every session's work. Engines come from
    ``engines`` (the composition root, ``avatar.compose.serve``, passes the real one)."""

    def __init__(
        self, cfg: Config, engines: EngineFactory, clock: Clock, executor: Executor | None = None
    ) -> None:
        self.cfg, self.engines, self.clock = cfg, engines, clock
        workers = cfg.engine.workers or os.cpu_count() or 2
        self.executor = executor or ThreadPoolExecutor(workers, thread_name_prefix="engine")
        self.sessions: dict[str, Session] = {}
        self.web_dir = Path(cfg.server.web_dir) if cfg.server.web_dir else WEB_DIR
        check_hooks()
        configure_ice(cfg.server)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors_as_json])
        app.router.add_get("/", self.index)
        app.router.add_get("/api/avatars", self.avatars)
        app.router.add_get("/api/health", self.health)
        app.router.add_post("/offer", self.offer)
        app.router.add_get("/ws", self.ws_events)
        app.router.add_get("/ws/audio", self.ws_audio)
        if self.web_dir.is_dir():
            app.router.add_static("/", self.web_dir)
        app.on_shutdown.append(self._shutdown)
        return app

    # -- HTTP -----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.web_dir / "index.html"
        if not page.is_file():
            raise RequestError(f"no demo page at {page} (set server.web_dir)", 404)
        return web.FileResponse(page)

    async def avatars(self, request: web.Request) -> web.Response:
        names = builtin_names()
        return web.json_response({"avatars": names, "default": self.cfg.render.avatar})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions)})

    async def offer(self, request: web.Request) -> web.Response:
        sdp, avatar, mic = await _parse_offer(request, self.cfg.render.avatar)
        if len(self.sessions) >= self.cfg.server.max_sessions:
            raise RequestError(f"server full ({self.cfg.server.max_sessions} sessions)", 503)
        session = await self._open_session(avatar, mic)
        try:
            answer = await self._negotiate(session, sdp)
        except Exception:
            await self._close(session)
            raise
        return web.json_response({"sdp": answer, "type": "answer", "session": session.sid})

    async def _open_session(self, avatar: str, mic: bool) -> Session:
        cfg = self.cfg
        sid = secrets.token_urlsafe(9)
        observer = (
            Profiler(self.clock, cfg.motion.fps, sid, keep=3000)
            if cfg.server.profile
            else NULL_OBSERVER
        )
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(self.executor, self.engines, avatar, mic, observer)
        pc = RTCPeerConnection(rtc_configuration(cfg.server))
        session = Session(
            sid, pc, engine, self.clock, self.executor, avatar=avatar, mic=mic,
            stats_interval_s=cfg.server.stats_interval_s, observer=observer,
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

        spawn(self._expire_unconnected(session), f"expire-{session.sid}")

    async def _negotiate(self, session: Session, sdp: str) -> str:
        pc = session.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        except Exception as exc:  # aiortc raises ValueError and others on bad SDP
            raise RequestError(f"malformed SDP offer: {exc}") from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise RequestError("the offer must receive video: addTransceiver('video')")
        if "audio" not in kinds:
            raise RequestError("the offer must have an audio transceiver (sendrecv or recvonly)")
        video_sender = pc.addTrack(session.video)
        pc.addTrack(session.audio)
        if session.observer.enabled:
            time_sender(video_sender, session.video, session.observer)
        await pc.setLocalDescription(await pc.createAnswer())
        return rewrite_candidates(pc.localDescription.sdp, self.cfg.server.ice_public_ip)

    async def _expire_unconnected(self, session: Session) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if session.pc.connectionState != "connected" and not session.closed.is_set():
            log.info("session %s never connected: closed", session.sid)
            await self._close(session)

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.sid, None)

    async def _close(self, session: Session) -> None:
        self.sessions.pop(session.sid, None)
        await session.close()

    async def _shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(self._close(s) for s in list(self.sessions.values())))

    # -- WebSockets -----------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session:
        sid = request.query.get("session", "")
        session = self.sessions.get(sid)
        if session is None:
            raise RequestError(f"no session {sid!r} (POST /offer first)", 404)
        return session

    async def ws_events(self, request: web.Request) -> web.WebSocketResponse:
        session = self._session(request)
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        session.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = _json_or_none(msg.data)
                if data is not None and data.get("type") == "candidate":
                    await _add_candidate(session, data.get("candidate"), ws)
                else:
                    session.handle_message(msg.data)
        finally:
            session.sockets.discard(ws)
            if not session.sockets:  # the page that opened it is gone (or closed its client)
                await session.on_gone("events socket closed")
        return ws

    async def ws_audio(self, request: web.Request) -> web.WebSocketResponse:
        session = self._session(request)
        if session.mic:
            raise RequestError("this session takes its audio from the microphone; "
                               "open it with \"audio\": \"none\" to stream PCM")  # fmt: skip
        ws = web.WebSocketResponse(max_msg_size=4 << 20)
        await ws.prepare(request)
        reader = PcmReader()
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    if reader.control(msg.data, session) == "end":
                        break
                elif msg.type == WSMsgType.BINARY:
                    session.engine.push_audio(reader.chunk(msg.data))
            except AudioInputError as exc:
                await ws.send_json({"type": "error", "message": str(exc)})
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
            if not isinstance(rate, int) or not 8000 <= rate <= 192000:
                raise AudioInputError(f"sample_rate must be an integer 8000-192000, got {rate!r}")
            if channels not in (1, 2):
                raise AudioInputError(f"channels must be 1 or 2, got {channels!r}")
            self.rate, self.channels = rate, channels
        elif kind == "clear":
            session.clear()
        elif kind != "end":
            raise AudioInputError(f"unknown control message {text[:80]!r}")
        return str(kind)

    def chunk(self, data: bytes) -> AudioChunk:
        if self.rate is None:
            raise AudioInputError('send {"type": "format", "sample_rate": N} before audio')
        if len(data) % (2 * self.channels):
            raise AudioInputError("binary messages must hold whole s16le sample frames")
        pcm = from_pcm16(np.frombuffer(data, "<i2"))
        mono = pcm.reshape(-1, self.channels).mean(axis=1)
        return AudioChunk(mono.astype(np.float32), self.rate, 0)


async def _parse_offer(request: web.Request, default_avatar: str) -> tuple[str, str, bool]:
    try:
        params = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise RequestError('the body must be JSON: {"sdp": ..., "type": "offer"}') from None
    if not isinstance(params, dict):
        raise RequestError('the body must be a JSON object: {"sdp": ..., "type": "offer"}')
    sdp, kind = params.get("sdp"), params.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0"):
        raise RequestError('expected {"sdp": "v=0...", "type": "offer"}')
    if "\nm=" not in sdp:
        raise RequestError("malformed SDP offer: it has no media (m=) sections")
    avatar = params.get("avatar") or default_avatar
    # A page may pick a bundled avatar or the server's default, never a folder path of its own.
    if not isinstance(avatar, str) or (avatar not in builtin_names() and avatar != default_avatar):
        names = ", ".join(builtin_names())
        raise RequestError(f"unknown avatar {avatar!r}: choose one of {names}", 404)
    try:
        resolve_avatar(avatar)
    except AvatarError as exc:
        raise RequestError(str(exc), 404) from None
    audio = params.get("audio", "mic")
    if audio not in ("mic", "none"):
        raise RequestError(f'audio must be "mic" or "none", got {audio!r}')
    return sdp, avatar, audio == "mic"


async def _add_candidate(session: Session, cand: Any, ws: web.WebSocketResponse) -> None:
    if not cand or not cand.get("candidate"):
        return  # end of candidates
    try:
        text = str(cand["candidate"]).removeprefix("candidate:")
        ice: RTCIceCandidate = candidate_from_sdp(text)
        ice.sdpMid = cand.get("sdpMid")
        ice.sdpMLineIndex = cand.get("sdpMLineIndex")
        await session.pc.addIceCandidate(ice)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        await ws.send_json({"type": "error", "message": f"bad ICE candidate: {exc}"})


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@web.middleware
async def _errors_as_json(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except RequestError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except AvatarError as exc:  # e.g. an avatar folder that fails to load
        return web.json_response({"error": str(exc)}, status=500)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error: {exc!r}"}, status=500)
