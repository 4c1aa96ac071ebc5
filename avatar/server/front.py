"""The front process of ``avatar serve --workers N``: the public address, routing to workers.

One Python process is bounded by what its GIL lets through, so sessions are spread over worker
processes (:mod:`avatar.server.workers`), each a whole :class:`AvatarServer` with its own models.
The front keeps everything that is cheap and per client: static files, ``/api/*``, origins and
CORS, tokens, rate limits and body sizes (what :class:`AvatarServer` does, inherited). Then:

- ``POST /offer`` goes to the worker with the fewest sessions (offers in flight included) that
  says it has room; a worker answering 503 (full, draining) passes it to the next; all full is
  503 with ``Retry-After``. The answer's session id names the worker (``w1.xxxx``).
- ``/ws`` and ``/ws/audio`` are relayed to the session's worker, which checks the session's key
  as before. Text and binary messages both ways, one message at a time (a worker that stops
  reading a PCM socket stops the front reading the page's: backpressure holds), close codes and
  reasons passed through. A refusal by the worker (404, 409) reaches the page as its JSON.
- Media never passes here: each worker's aiortc gathers ICE on the configured host addresses,
  on its own slice of ``server.udp_ports``, and the page's UDP goes straight to it.
- ``/healthz`` and ``/readyz`` list the workers (pid, up, sessions, restarts); ``/metrics`` is
  every worker's exposition with a ``worker`` label, the front's own requests and process
  (``worker="front"``), ``avatar_worker_up`` and ``avatar_worker_restarts_total``.
- SIGTERM drains every worker (each tells its sessions and waits ``server.drain_s``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from avatar.clock import Clock, unix_time
from avatar.config import Config
from avatar.errors import AvatarError
from avatar.server.app import AvatarServer
from avatar.server.metrics import CONTENT_TYPE, merge_expositions
from avatar.server.offer import RequestError
from avatar.server.workers import Worker, WorkerPool
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.server")
OFFER_TIMEOUT_S = 90.0  # a worker builds the engine before it answers (models load once)
NO_SESSION = "no such session, or a wrong key (POST /offer first)"
FRONT_FAMILIES = ("process_", "avatar_requests_refused")  # the front's own part of /metrics
ABNORMAL = {None, 1005, 1006, 1015}  # no close frame came: the other side gets 1001


def _no_engines(avatar: str, live: bool, observer: Any) -> Any:
    raise AvatarError("the front process builds no engines: its workers do")


class FrontServer(AvatarServer):
    """:class:`AvatarServer`'s HTTP surface with sessions held by ``pool``'s workers."""

    def __init__(self, cfg: Config, pool: WorkerPool, clock: Clock, wall: Any = unix_time):
        super().__init__(cfg, _no_engines, clock, wall=wall)
        self.pool = pool

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

    async def metrics_text(self, request: web.Request) -> web.Response:
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
        self._rate(self.offer_rate, request, "offers")
        self._authenticate(request)
        if request.content_type != "application/json":
            raise RequestError("POST /offer takes Content-Type: application/json", 415)
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

    async def ws_events(self, request: web.Request) -> web.WebSocketResponse:
        lim = self.cfg.server.limits
        return await self._relay(request, "/ws", self.cfg.server.reap_s / 2,
                                 lim.max_message_kb << 10)  # fmt: skip

    async def ws_audio(self, request: web.Request) -> web.WebSocketResponse:
        lim = self.cfg.server.limits
        return await self._relay(request, "/ws/audio", None, lim.max_audio_message_kb << 10)

    async def _relay(
        self, request: web.Request, path: str, heartbeat: float | None, max_bytes: int
    ) -> web.WebSocketResponse:
        self._rate(self.socket_rate, request, "sockets")
        params = {k: request.query.get(k, "") for k in ("session", "key")}
        worker = self.pool.owner(params["session"])
        if worker is None:
            raise RequestError(NO_SESSION, 404)
        try:
            upstream = await worker.http.ws_connect(f"http://worker{path}", params=params,
                                                    max_msg_size=0)  # fmt: skip
        except aiohttp.WSServerHandshakeError:
            raise await self._refusal(worker, path, params) from None
        except aiohttp.ClientError:
            raise RequestError(NO_SESSION, 404) from None
        ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=max_bytes)
        try:
            await ws.prepare(request)
            await relay(ws, upstream)
        finally:
            await upstream.close()
        return ws

    async def _refusal(self, worker: Worker, path: str, params: dict[str, str]) -> RequestError:
        """Why the worker refused the socket (unknown session, wrong key, 409...). aiohttp's
        client drops a refused handshake's body, so the same request without the upgrade
        fetches the worker's JSON error: it refuses before it would upgrade."""
        try:
            async with worker.http.get(f"http://worker{path}", params=params) as r:
                body = await r.json(content_type=None)
                return RequestError(str(body["error"]), r.status)
        except (aiohttp.ClientError, ValueError, KeyError, TypeError):
            return RequestError(NO_SESSION, 404)

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


async def relay(page: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Both directions until one side closes; its close code and reason go to the other. The
    other direction stops reading first, so the close handshake with that side is complete."""
    up = spawn(_pipe(page, upstream), "ws-to-worker")
    down = spawn(_pipe(upstream, page), "ws-to-page")
    try:
        done, _ = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        await cancel(up, down)
        first = up if up in done else down
        code, reason = first.result()
        await (upstream if first is up else page).close(code=code, message=reason)
    finally:
        await page.close()


async def _pipe(src: Any, dst: Any) -> tuple[int, bytes]:
    """Messages from ``src`` to ``dst``, each sent (and drained) before the next is read, until
    ``src`` closes: the close code and reason for ``dst``."""
    while True:
        msg = await src.receive()
        try:
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:
                break
        except ConnectionError:  # ``dst`` is gone
            return 1001, b""
    reason = msg.extra if msg.type == WSMsgType.CLOSE and isinstance(msg.extra, str) else ""
    return (1001 if src.close_code in ABNORMAL else src.close_code), reason.encode()[:120]
