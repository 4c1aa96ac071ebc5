"""The single-process server: a gate, the pages, this process's sessions and their sockets.

:class:`AvatarServer` is a composition of the server's parts (see :mod:`avatar.server.routes` for
every URL): :class:`~avatar.server.gate.Gate` (who may come in), :class:`~avatar.server.pages.
Pages` (the page's files and ``/api``), :class:`~avatar.server.sessions.Sessions` (open,
negotiate, close, drain, given an :class:`~avatar.server.sessions.EngineFactory`), the events
socket and the PCM socket, WHIP and WHEP (:mod:`avatar.server.whip`); and, when given, the render
jobs (:mod:`avatar.renders.api`). It is
what ``avatar serve`` runs with one process, and what each worker of ``avatar serve --workers N``
runs behind the front. The composition root
(:mod:`avatar.compose.serve`) builds it with real engines and installs aiortc's hooks once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor

from aiohttp import web

from avatar.clock import Clock, unix_time
from avatar.config import Config
from avatar.errors import AvatarError, RequestError
from avatar.face.store import builtin_names, resolve_avatar
from avatar.server.events_socket import serve_events
from avatar.server.gate import Gate
from avatar.server.metrics import CONTENT_TYPE, ServerMetrics
from avatar.server.offer import check_sdp, parse_offer
from avatar.server.pages import Pages
from avatar.server.pcm_socket import serve_pcm
from avatar.server.routes import RendersFactory, route_table
from avatar.server.sessions import EngineFactory, Sessions
from avatar.server.whip import WhipRoutes

log = logging.getLogger("avatar.server")


class AvatarServer:
    """Sessions in this process, with one executor for every session's work; see the module
    docstring. ``sid_prefix`` names the process in session ids (``w1.`` in worker 1)."""

    def __init__(
        self,
        cfg: Config,
        engines: EngineFactory,
        clock: Clock,
        executor: Executor,
        wall: Callable[[], float] = unix_time,
        sid_prefix: str = "",
        renders: RendersFactory | None = None,
    ) -> None:
        self.cfg, self.executor = cfg, executor
        self.metrics = ServerMetrics(clock, lambda: self.sessions.values(), cfg.server.max_sessions)
        self.gate = Gate(cfg.server, clock, wall, self.metrics.refused)
        self.pages = Pages(cfg, self.gate, wall)
        self.sessions = Sessions(cfg, engines, clock, executor, self.metrics, wall, sid_prefix)
        self.renders = renders(self.gate, self.metrics.registry) if renders else None
        self.whip = WhipRoutes(cfg, self.gate, self.sessions, clock, wall,
                               lambda asked: choose_avatar(asked, cfg.render.avatar))  # fmt: skip

    def app(self) -> web.Application:
        return route_table(self.cfg.server, self.gate, self.pages, self, self.renders,
                           [self.whip])  # fmt: skip

    async def drain(self, timeout_s: float) -> None:
        await self.sessions.drain(timeout_s)

    async def shutdown(self, app: web.Application) -> None:
        await self.sessions.close_all()

    # -- the session routes -----------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.Response:
        self.gate.admit_offer(request)
        offer = parse_offer(await request.read())
        avatar = choose_avatar(offer.avatar, self.cfg.render.avatar)
        check_sdp(offer.sdp, self.cfg.server.limits)
        session, answer = await self.sessions.open(offer.sdp, avatar, offer.mic)
        body = {"sdp": answer, "type": "answer", "session": session.sid, "key": session.key}
        return web.json_response(body)

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        self.gate.admit_socket(request)
        session = self.sessions.find(request.query.get("session", ""), request.query.get("key", ""))
        return await serve_events(request, session, self.cfg.server)

    async def audio(self, request: web.Request) -> web.WebSocketResponse:
        self.gate.admit_socket(request)
        session = self.sessions.find(request.query.get("session", ""), request.query.get("key", ""))
        return await serve_pcm(request, session, self.cfg.server)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions)})

    async def ready(self, request: web.Request) -> web.Response:
        sessions = self.sessions
        ok = not (sessions.full or sessions.draining)
        body = {"ready": ok, "sessions": len(sessions), "capacity": sessions.slots.capacity,
                "draining": sessions.draining}  # fmt: skip
        return web.json_response(body, status=200 if ok else 503)

    async def scrape(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})


def choose_avatar(asked: str | None, default: str) -> str:
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
