"""The front process of ``avatar serve --workers N``: the public address, routing to workers.

One Python process is bounded by what its GIL lets through, so sessions are spread over worker
processes (:mod:`avatar.server.workers`), each a whole :class:`~avatar.server.app.AvatarServer`
with its own models. The front is a composition of the same parts with no engines at all: the
:class:`~avatar.server.gate.Gate` (origins and CORS, tokens, rate limits, body sizes) and the
:class:`~avatar.server.pages.Pages` (static files, ``/api/*``) as in one process; a
:class:`~avatar.server.workers.WorkerPool` in place of the sessions. Then:

- ``POST /offer`` goes to the worker with the fewest sessions (offers in flight included) that
  says it has room; a worker answering 503 (full, draining) passes it to the next; all full is
  503 with ``Retry-After``. The answer's session id names the worker (``w1.xxxx``).
- ``/ws`` and ``/ws/audio`` are relayed to the session's worker, which checks the session's key
  as before (:mod:`avatar.server.relay`). A refusal by the worker (404, 409) reaches the page as
  its JSON.
- Media never passes here: each worker's aiortc gathers ICE on the configured host addresses,
  on its own slice of ``server.udp_ports``, and the page's UDP goes straight to it.
- ``/healthz`` and ``/readyz`` list the workers (pid, up, sessions, restarts); ``/metrics`` is
  every worker's exposition with a ``worker`` label, the front's own requests and process
  (``worker="front"``), ``avatar_worker_up`` and ``avatar_worker_restarts_total``.
- SIGTERM drains every worker (each tells its sessions and waits ``server.drain_s``).
- WHIP and WHEP (:mod:`avatar.server.whip`) are not relayed: their routes answer 501 saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from avatar.clock import Clock, unix_time
from avatar.config import Config
from avatar.errors import RequestError
from avatar.server.gate import Gate
from avatar.server.metrics import CONTENT_TYPE, ServerMetrics, merge_expositions
from avatar.server.pages import Pages
from avatar.server.relay import page_socket, relay_socket
from avatar.server.routes import RendersFactory, route_table
from avatar.server.sessions import NO_SESSION
from avatar.server.whip import WhipElsewhere
from avatar.server.workers import Worker, WorkerPool

log = logging.getLogger("avatar.server")
OFFER_TIMEOUT_S = 90.0  # a worker builds the engine before it answers (models load once)
# the front's own part of /metrics (render jobs: the front has their routes)
FRONT_FAMILIES = ("process_", "avatar_requests_refused", "avatar_render")
WHIP_ON_WORKERS = ("WHIP and WHEP are served by a single-process server (server.workers: 1); "
                   "this one runs worker processes behind a front")  # fmt: skip


class FrontServer:
    """The gate and the pages in front of ``pool``'s workers; see the module docstring."""

    def __init__(
        self, cfg: Config, pool: WorkerPool, clock: Clock, wall: Callable[[], float] = unix_time,
        renders: RendersFactory | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.pool = cfg, pool
        self.metrics = ServerMetrics(clock, tuple, cfg.server.max_sessions)  # refusals, process
        self.gate = Gate(cfg.server, clock, wall, self.metrics.refused)
        self.pages = Pages(cfg, self.gate, wall)
        self.renders = renders(self.gate, self.metrics.registry) if renders else None
        self.draining = False

    def app(self) -> web.Application:
        whip = WhipElsewhere(WHIP_ON_WORKERS)
        return route_table(self.cfg.server, self.gate, self.pages, self, self.renders, [whip])

    async def shutdown(self, app: web.Application) -> None:
        """The workers are stopped by :meth:`drain` or by whoever started the pool."""

    # -- health, readiness, metrics ---------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        answers = await self.pool.ask_all("/healthz")
        workers = [_describe(w, status, body) for w, status, body in answers]
        ok = any(status == 200 for _, status, _ in answers)
        body = {"ok": ok, "sessions": sum(d["sessions"] or 0 for d in workers),
                "workers": workers}  # fmt: skip
        return web.json_response(body, status=200 if ok else 503)

    async def ready(self, request: web.Request) -> web.Response:
        answers = await self.pool.ask_all("/readyz")
        workers = [_describe(w, status, body) for w, status, body in answers]
        ok = not self.draining and any(status == 200 for _, status, _ in answers)
        body = {"ready": ok, "sessions": sum(d["sessions"] or 0 for d in workers),
                "capacity": sum(d["capacity"] or 0 for d in workers),
                "draining": self.draining, "workers": workers}  # fmt: skip
        return web.json_response(body, status=200 if ok else 503)

    async def scrape(self, request: web.Request) -> web.Response:
        parts: list[tuple[str | None, str]] = [("front", self._own_metrics()),
                                               (None, self._worker_metrics())]  # fmt: skip
        for w, status, text in await self.pool.ask_all("/metrics"):
            if status == 200 and isinstance(text, str):
                parts.append((str(w.index), text))
        return web.Response(body=merge_expositions(parts), headers={"Content-Type": CONTENT_TYPE})

    def _own_metrics(self) -> str:
        lines, keep = [], False
        for line in self.metrics.text().decode().splitlines():
            if line.startswith("# HELP "):
                keep = line[7:].startswith(FRONT_FAMILIES)
            if keep:
                lines.append(line)
        return "\n".join(lines) + "\n"

    def _worker_metrics(self) -> str:
        up = ["# HELP avatar_worker_up 1 while the worker process answers",
              "# TYPE avatar_worker_up gauge"]  # fmt: skip
        restarts = ["# HELP avatar_worker_restarts_total worker processes started again",
                    "# TYPE avatar_worker_restarts_total counter"]  # fmt: skip
        for w in self.pool.workers:
            up.append(f'avatar_worker_up{{worker="{w.index}"}} {int(w.up)}')
            restarts.append(f'avatar_worker_restarts_total{{worker="{w.index}"}} {w.restarts}')
        return "\n".join(up + restarts) + "\n"

    # -- offers -----------------------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.Response:
        self.gate.admit_offer(request)
        body = await request.read()  # within server.limits.max_body_kb (413 past it)
        if self.draining:
            raise RequestError("the server is shutting down", 503, retry_after_s=30)
        for worker in await self.pool.by_load():
            answer = await self._offer_to(worker, body)
            if answer is not None:
                return answer
        self.metrics.refused.labels("full").inc()
        raise RequestError(f"server full ({self.pool.n} workers, {self.cfg.server.max_sessions} "
                           "sessions each)", 503, retry_after_s=10)  # fmt: skip

    async def _offer_to(self, worker: Worker, body: bytes) -> web.Response | None:
        """The worker's answer, or None: full or draining (503), or gone."""
        worker.pending += 1
        try:
            timeout = aiohttp.ClientTimeout(total=OFFER_TIMEOUT_S)
            headers = {"Content-Type": "application/json"}
            async with worker.http.post("http://worker/offer", data=body, headers=headers,
                                        timeout=timeout) as r:  # fmt: skip
                if r.status == 503:
                    return None
                return web.Response(body=await r.read(), status=r.status,
                                    content_type="application/json")  # fmt: skip
        except aiohttp.ClientConnectionError as exc:  # it died meanwhile: the next one
            log.warning("worker %d did not take an offer: %r", worker.index, exc)
            return None
        except TimeoutError:  # it may still open the session: do not open a second one
            raise RequestError("the server took too long to answer the offer", 503,
                               retry_after_s=10) from None  # fmt: skip
        finally:
            worker.pending -= 1

    # -- sockets ----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        return await self._relay(request, "/ws")

    async def audio(self, request: web.Request) -> web.WebSocketResponse:
        return await self._relay(request, "/ws/audio")

    async def _relay(self, request: web.Request, path: str) -> web.WebSocketResponse:
        self.gate.admit_socket(request)
        params = {k: request.query.get(k, "") for k in ("session", "key")}
        worker = self.pool.owner(params["session"])
        if worker is None:
            raise RequestError(NO_SESSION, 404)
        url = f"http://worker{path}"
        ws = page_socket(self.cfg.server, path)
        return await relay_socket(request, worker.http, url, params, ws)

    # -- shutdown ---------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """No new offers; every worker drains its sessions (``timeout_s``), then stops."""
        self.draining = self.metrics.collector.draining = True
        await self.pool.stop(timeout_s + 10.0)


def _describe(w: Worker, status: int, body: Any) -> dict[str, Any]:
    info = body if isinstance(body, dict) else {}
    return {"worker": w.index, "pid": w.pid, "up": w.up and status != 0,
            "ready": status == 200, "sessions": info.get("sessions"),
            "capacity": info.get("capacity"), "restarts": w.restarts}  # fmt: skip
