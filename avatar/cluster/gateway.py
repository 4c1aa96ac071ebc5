"""A gateway of the pool: ``avatar serve --role gateway``, stateless, any number of them.

A composition of the server's parts with no engines (as the ``--workers`` front is): the
:class:`~avatar.server.gate.Gate` (origins, tokens, rate limits, body sizes) and the
:class:`~avatar.server.pages.Pages`, then the pool in Redis in place of sessions:

- ``POST /offer``: the offer is checked here, then placed (:mod:`avatar.cluster.placement`) on a
  live, serving node of its ``pool`` (the offer's, else ``cluster.pool``) that has its avatar; the
  node answers (its session id and key reach the page unchanged) and the gateway releases its
  slot hold. A node that refuses (503: full, draining) or cannot be reached is left out and the
  offer goes to the next; none left: 503 with ``Retry-After``. Redis not answering: 503 saying so.
- ``/ws`` and ``/ws/audio``: relayed to the node that holds the session, looked up in Redis by
  the session's id (:meth:`SessionLog.owner`), so no load-balancer stickiness is needed; the node
  checks the session's key as before. A node that dies closes the relayed sockets (1001).
- Once a second, the gateway that holds the sweeper lease closes the sessions of nodes whose
  liveness expired as ``node_lost`` (:meth:`SessionLog.sweep`).
- WHIP and WHEP: a publisher's offer is placed like a page's, later requests about a resource
  go to its session's node (:mod:`avatar.cluster.whip_relay`).
- Media never passes here: the page's UDP goes straight to the node.
- ``/healthz``: this process; ``/readyz``: 503 while Redis does not answer or no node serves;
  ``/metrics``: the gateway's requests and process, ``avatar_pool_nodes`` and
  ``avatar_pool_sessions`` per pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import Gauge

from avatar.clock import Clock, sleep_for, unix_time
from avatar.cluster.keys import ClusterUnavailable, Keys, connect
from avatar.cluster.placement import Hold, Placer
from avatar.cluster.records import SessionLog
from avatar.cluster.registry import NodeInfo, NodeRegistry
from avatar.cluster.whip_relay import Forward, WhipRelay
from avatar.config import Config
from avatar.errors import RequestError
from avatar.server.gate import Gate
from avatar.server.metrics import CONTENT_TYPE, ServerMetrics
from avatar.server.offer import check_sdp, parse_offer
from avatar.server.pages import Pages
from avatar.server.relay import page_socket, relay_socket
from avatar.server.routes import RendersFactory, route_table
from avatar.server.sessions import NO_SESSION
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.cluster")
OFFER_TIMEOUT_S = 90.0  # a node builds the engine before it answers
SWEEP_EVERY_S = 1.0


class GatewayServer:
    """The gate and the pages in front of the pool; see the module docstring."""

    def __init__(
        self, cfg: Config, clock: Clock, wall: Callable[[], float] = unix_time,
        renders: RendersFactory | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.clock = cfg, clock
        cc = cfg.server.cluster
        self.metrics = ServerMetrics(clock, tuple, cfg.server.max_sessions)
        self.gate = Gate(cfg.server, clock, wall, self.metrics.refused)
        self.pages = Pages(cfg, self.gate, wall)
        self.renders = renders(self.gate, self.metrics.registry) if renders else None
        self.redis = connect(cc.redis)
        keys = Keys(cc.prefix)
        self.registry = NodeRegistry(self.redis, keys, cc.alive_s)
        self.placer = Placer(self.redis, keys, self.registry, cc.hold_s)
        self.records = SessionLog(self.redis, keys)
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.http: aiohttp.ClientSession | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.nodes_gauge = Gauge("avatar_pool_nodes", "live nodes by pool and state",
                                 ["pool", "state"], registry=self.metrics.registry)  # fmt: skip
        self.sessions_gauge = Gauge("avatar_pool_sessions", "sessions and capacity by pool",
                                    ["pool", "what"], registry=self.metrics.registry)  # fmt: skip

    def app(self) -> web.Application:
        whip = WhipRelay(self.gate, self.place_on, self._owner, self._client,
                         self.cfg.server.cluster.pool, self.cfg.render.avatar)  # fmt: skip
        app = route_table(self.cfg.server, self.gate, self.pages, self, self.renders, [whip])
        app.on_startup.append(self._start)
        return app

    def _client(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    async def _start(self, app: web.Application) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OFFER_TIMEOUT_S))
        self._sweeper = spawn(self._sweep(), "cluster-sweeper")

    async def shutdown(self, app: web.Application) -> None:
        await cancel(self._sweeper)
        if self.http is not None:
            await self.http.close()
        await self.redis.aclose()

    # -- offers -----------------------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.Response:
        self.gate.admit_offer(request)
        body = await request.read()  # within server.limits.max_body_kb (413 past it)
        offer = parse_offer(body)
        check_sdp(offer.sdp, self.cfg.server.limits)
        avatar = offer.avatar or self.cfg.render.avatar
        pool = offer.pool or self.cfg.server.cluster.pool
        return await self.place_on(request, pool, avatar,
                                   lambda req, node: self._offer_to(node, body, req))  # fmt: skip

    async def place_on(
        self, request: web.Request, pool: str, avatar: str, forward: Forward
    ) -> web.Response:
        """A slot held on a node of ``pool`` with ``avatar``, and ``forward`` of the request to
        it; a node that refuses (None) is left out and the next one is tried."""
        refused: set[str] = set()
        while True:
            hold = await self._place(pool, avatar, frozenset(refused))
            if hold is None:
                break
            try:
                answer = await forward(request, hold.node)
            finally:
                await self._release(hold)
            if answer is not None:
                return answer
            refused.add(hold.node.node_id)
        self.metrics.refused.labels("full").inc()
        raise RequestError(f"no node of pool {pool!r} with avatar {avatar!r} has room", 503,
                           retry_after_s=10)  # fmt: skip

    async def _place(self, pool: str, avatar: str, refused: frozenset[str]) -> Hold | None:
        try:
            return await self.placer.place(pool, avatar, refused)
        except ClusterUnavailable as exc:
            log.warning("offer not placed: %s", exc)
            self.metrics.refused.labels("registry").inc()
            raise RequestError("the node pool's registry (Redis) is not answering; try again",
                               503, retry_after_s=5) from None  # fmt: skip

    async def _release(self, hold: Hold) -> None:
        with contextlib.suppress(ClusterUnavailable):  # else it expires by itself (hold_s)
            await self.placer.release(hold)

    async def _offer_to(
        self, node: NodeInfo, body: bytes, request: web.Request
    ) -> web.Response | None:
        """The node's answer, or None: it refused (503) or could not be reached."""
        assert self.http is not None
        headers = {"Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with self.http.post(f"{node.address}/offer", data=body, headers=headers) as r:
                if r.status == 503:
                    return None
                return web.Response(body=await r.read(), status=r.status,
                                    content_type="application/json")  # fmt: skip
        except aiohttp.ClientConnectionError as exc:
            log.warning("node %s did not take an offer: %r", node.node_id, exc)
            return None
        except TimeoutError:  # it may still open the session: do not open a second one
            raise RequestError("the node took too long to answer the offer", 503,
                               retry_after_s=10) from None  # fmt: skip

    # -- sockets ----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        return await self._relay(request, "/ws")

    async def audio(self, request: web.Request) -> web.WebSocketResponse:
        return await self._relay(request, "/ws/audio")

    async def _relay(self, request: web.Request, path: str) -> web.WebSocketResponse:
        self.gate.admit_socket(request)
        assert self.http is not None
        params = {k: request.query.get(k, "") for k in ("session", "key")}
        node = await self._owner(params["session"])
        url = f"{node.address}{path}"
        ws = page_socket(self.cfg.server, path)
        return await relay_socket(request, self.http, url, params, ws)

    async def _owner(self, sid: str) -> NodeInfo:
        try:
            node_id = await self.records.owner(sid) if sid else None
            nodes = {n.node_id: n for n, alive in await self.registry.nodes() if alive}
        except ClusterUnavailable:
            raise RequestError("the node pool's registry (Redis) is not answering; try again",
                               503, retry_after_s=5) from None  # fmt: skip
        if node_id is None or node_id not in nodes:
            raise RequestError(NO_SESSION, 404)
        return nodes[node_id]

    # -- health, readiness, metrics, the sweep ----------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "role": "gateway", "gateway": self.name})

    async def ready(self, request: web.Request) -> web.Response:
        try:
            nodes = await self.registry.nodes()
        except ClusterUnavailable as exc:
            return web.json_response({"ready": False, "error": str(exc)}, status=503)
        serving = [n for n, alive in nodes if alive and n.state == "serving"]
        body = {"ready": bool(serving), "nodes": len(serving),
                "sessions": sum(n.sessions for n in serving),
                "capacity": sum(n.capacity for n in serving)}  # fmt: skip
        return web.json_response(body, status=200 if serving else 503)

    async def scrape(self, request: web.Request) -> web.Response:
        try:
            nodes = [n for n, alive in await self.registry.nodes() if alive]
        except ClusterUnavailable:
            nodes = []
        self.nodes_gauge.clear()
        self.sessions_gauge.clear()
        for n in nodes:
            self.nodes_gauge.labels(n.pool, n.state).inc()
            self.sessions_gauge.labels(n.pool, "sessions").inc(n.sessions)
            self.sessions_gauge.labels(n.pool, "capacity").inc(n.capacity)
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})

    async def _sweep(self) -> None:
        while True:
            try:
                for node_id in await self.records.sweep(self.name, 3 * SWEEP_EVERY_S):
                    log.warning("node %s is gone: its sessions are recorded as node_lost", node_id)
            except ClusterUnavailable as exc:
                log.debug("sweep skipped: %s", exc)
            await sleep_for(self.clock, SWEEP_EVERY_S)
