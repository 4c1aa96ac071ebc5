"""WHIP and WHEP through a pool's gateway: a publisher's offer is placed on a node like a page's,
every later request about a resource goes to the node that holds its session.

- ``POST /whip``: placed (:meth:`GatewayServer.place_on`: the pool from ``?pool=``, else
  ``cluster.pool``; ``?avatar=`` as the node reads it) and passed to the node as it came; a node
  that refuses (503) or cannot be reached is left out and the offer goes on.
- ``/whip/{id}``, ``/whep/{id}``, ``/whep/{id}/{viewer}`` (any method): ``{id}`` is
  ``{session}.{key}``, so the session's node is found in Redis by the session id and the request
  goes to it unchanged; its answer (status, body, ``Location``, ``ETag``, ``Link``...) comes back
  unchanged (the node's ``Location`` paths are valid on every gateway).
- ``OPTIONS``: the CORS preflight, answered here as a node would.

Tokens, origins and rates are the gateway's gate's; a node checks the token again (the gateway
passes ``Authorization`` on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from avatar.cluster.registry import NodeInfo
from avatar.errors import RequestError
from avatar.server.gate import Gate
from avatar.server.whip import NO_RESOURCE, PATHS, SDP_TYPE, whip_preflight

PASSED_ON = ("Content-Type", "Authorization", "If-Match")  # request headers a node reads
ANSWERED = ("Content-Type", "Location", "ETag", "Link", "Accept-Post", "Accept-Patch",
            "Retry-After", "Access-Control-Expose-Headers")  # fmt: skip
# (the request, the node to try) -> its answer, or None when it refused or was unreachable
Forward = Callable[[web.Request, NodeInfo], Awaitable[web.Response | None]]


class WhipRelay:
    """The WHIP and WHEP routes of a gateway (a :class:`~avatar.server.routes.RoutePart`):
    ``place_on(request, pool, avatar, forward)`` places an offer and passes it on,
    ``owner(sid)`` is the node holding a session, ``http()`` the gateway's client session."""

    def __init__(
        self, gate: Gate,
        place_on: Callable[[web.Request, str, str, Forward], Awaitable[web.Response]],
        owner: Callable[[str], Awaitable[NodeInfo]],
        http: Callable[[], aiohttp.ClientSession], default_pool: str, default_avatar: str,
    ) -> None:  # fmt: skip
        self.gate, self.place_on, self.owner, self.http = gate, place_on, owner, http
        self.pool, self.avatar = default_pool, default_avatar

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATHS[0], self.publish)
        for path in PATHS:
            router.add_route("OPTIONS", path, whip_preflight)
        for path in PATHS[1:]:
            for method in ("POST", "PATCH", "DELETE", "GET"):
                if not (method == "POST" and path != PATHS[2]):
                    router.add_route(method, path, self.resource)

    async def start(self, app: web.Application) -> None:
        """Nothing to start: the gateway's client session is its own."""

    async def stop(self, app: web.Application) -> None:
        """Nothing to stop."""

    async def publish(self, request: web.Request) -> web.Response:
        self.gate.admit_offer(request, SDP_TYPE)
        body = await request.read()
        pool = request.query.get("pool") or self.pool
        avatar = request.query.get("avatar") or self.avatar
        return await self.place_on(request, pool, avatar, self._forward(body))

    async def resource(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.gate.admit_offer(request, SDP_TYPE)
        else:
            self.gate.admit_update(request)
        sid = request.match_info["rid"].rpartition(".")[0]
        if not sid:
            raise RequestError(NO_RESOURCE, 404)
        node = await self.owner(sid)
        answer = await self._forward(await request.read())(request, node)
        if answer is None:
            raise RequestError(NO_RESOURCE, 404)
        return answer

    def _forward(self, body: bytes) -> Forward:
        async def forward(request: web.Request, node: NodeInfo) -> web.Response | None:
            headers = {h: request.headers[h] for h in PASSED_ON if h in request.headers}
            url = f"{node.address}{request.path_qs}"
            try:
                async with self.http().request(request.method, url, data=body or None,
                                               headers=headers) as r:  # fmt: skip
                    if r.status == 503 and request.path == PATHS[0]:
                        return None  # a full or draining node: the next one
                    out = CIMultiDict((k, v) for k in ANSWERED for v in r.headers.getall(k, []))
                    return web.Response(status=r.status, body=await r.read(), headers=out)
            except aiohttp.ClientConnectionError:
                return None

        return forward
