"""The route table: every URL of ``avatar serve``, whichever role answers it.

- ``GET /``, ``GET /<file>``, ``GET /api/avatars``, ``GET /api/ice``: :mod:`avatar.server.pages`.
- ``POST /offer``: ``{"sdp", "type": "offer", "avatar"?, "audio"?: "mic" | "none"}`` ->
  ``{"sdp", "type": "answer", "session", "key"}``. ``key`` opens the session's sockets.
  ``OPTIONS /offer``: the CORS preflight (:class:`~avatar.server.gate.Gate`).
- ``GET /ws?session=ID&key=KEY``: trickle ICE from the page, session events to the page
  (:mod:`avatar.server.events_socket`).
- ``GET /ws/audio?session=ID&key=KEY``: PCM input (:mod:`avatar.server.pcm_socket`).
- ``/v1/renders`` and ``/v1/render-options``: render jobs (:mod:`avatar.renders.api`), where
  the role was given them.
- ``POST /whip``, ``POST /whep/{id}``, and ``PATCH``/``DELETE``/``GET`` of their resources: WHIP
  and WHEP for standard WebRTC clients (:mod:`avatar.server.whip`; a clear 501 from the
  ``--workers`` front).
- ``GET /healthz`` (alive; also ``/api/health``), ``GET /readyz`` (503 while full or draining),
  ``GET /metrics`` (Prometheus).

Every request passes the role's :class:`~avatar.server.gate.Gate` first. A role supplies the
session routes (:class:`SessionRoutes`): the single-process server holds its sessions
(:mod:`avatar.server.app`); the ``--workers`` front relays them to worker processes
(:mod:`avatar.server.front`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from avatar.config import ServerConfig
from avatar.server.gate import Gate
from avatar.server.logs import quiet_peer_task_errors
from avatar.server.pages import Pages


class RoutePart(Protocol):
    """More routes behind a role's gate, started and stopped with the application (the render
    jobs: :class:`avatar.renders.api.Renders`)."""

    def add_routes(self, router: web.UrlDispatcher) -> None: ...

    async def start(self, app: web.Application) -> None: ...

    async def stop(self, app: web.Application) -> None: ...


RendersFactory = Callable[[Gate, CollectorRegistry], RoutePart]  # a role's render jobs


class SessionRoutes(Protocol):
    """What a role answers itself: offers, the session sockets, health, readiness, metrics."""

    async def offer(self, request: web.Request) -> web.StreamResponse: ...

    async def events(self, request: web.Request) -> web.StreamResponse: ...

    async def audio(self, request: web.Request) -> web.StreamResponse: ...

    async def health(self, request: web.Request) -> web.StreamResponse: ...

    async def ready(self, request: web.Request) -> web.StreamResponse: ...

    async def scrape(self, request: web.Request) -> web.StreamResponse:
        """``GET /metrics``."""

    async def shutdown(self, app: web.Application) -> None:
        """The application stops: close whatever is still open."""


def route_table(
    cfg: ServerConfig,
    gate: Gate,
    pages: Pages,
    role: SessionRoutes,
    renders: RoutePart | None = None,
    parts: Sequence[RoutePart] = (),
) -> web.Application:
    """Every URL of a role; ``parts``: more of them (WHIP and WHEP: :mod:`avatar.server.whip`)."""
    app = web.Application(middlewares=[gate.middleware],
                          client_max_size=cfg.limits.max_body_kb << 10)  # fmt: skip
    router = app.router
    pages.add_routes(router)
    router.add_get("/api/health", role.health)
    router.add_get("/healthz", role.health)
    router.add_get("/readyz", role.ready)
    router.add_get("/metrics", role.scrape)
    router.add_post("/offer", role.offer)
    router.add_route("OPTIONS", "/offer", gate.preflight)
    router.add_get("/ws", role.events)
    router.add_get("/ws/audio", role.audio)
    for part in (renders, *parts):
        if part is not None:
            part.add_routes(router)
            app.on_startup.append(part.start)
            app.on_cleanup.append(part.stop)
    pages.add_files(router)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(role.shutdown)
    return app


async def _on_startup(app: web.Application) -> None:
    quiet_peer_task_errors(asyncio.get_running_loop())
