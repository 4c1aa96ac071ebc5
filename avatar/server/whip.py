"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep): standard WebRTC clients publish a session's
microphone and watch its avatar, with no page and no JavaScript.

- ``POST /whip``, an ``application/sdp`` offer that sends audio: a new session whose microphone is
  that audio, exactly as a page's would be. ``201 Created`` with the SDP answer, ``Location:
  /whip/{id}``, an ``ETag`` naming the ICE session, and one ``Link: <url>; rel="ice-server"`` per
  configured ICE server URL (TURN credentials as ``GET /api/ice`` gives them). ``?avatar=NAME``
  picks a bundled avatar.
- ``POST /whep/{id}``, an offer that receives audio and video, ``{id}`` being the last segment of
  the WHIP ``Location``: that session's avatar (:mod:`avatar.server.whep`). ``201``, ``Location:
  /whep/{id}/{viewer}``, ``ETag``, ``Link``. 409 past ``server.limits.whep_viewers``.
- ``PATCH`` a resource with ``application/trickle-ice-sdpfrag`` (RFC 8840) and ``If-Match`` its
  ETag: ``204``, the candidates checked and added like a page's trickled ones. No ``If-Match``:
  428; another ETag: 412; an ICE restart (another ufrag): 422 (aiortc cannot restart ICE).
- ``DELETE`` a resource: ``200``, and it is 404 from then on. Deleting the WHIP resource ends the
  session and its viewers. ``GET`` a resource: ``204`` while it exists. ``OPTIONS``: CORS, with
  ``Accept-Post: application/sdp``.

Everything passes the role's gate first: tokens (``Authorization: Bearer``), origins, rates, and
every refusal is its JSON error. A resource id is ``{session}.{key}``: the session id names the
process holding it, the key (which also opens the session's sockets) makes it unguessable.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

from avatar.clock import Clock
from avatar.config import Config
from avatar.errors import RequestError
from avatar.server.gate import Gate
from avatar.server.ice import ice_servers
from avatar.server.logs import SESSION
from avatar.server.offer import check_sdp
from avatar.server.sdpfrag import TRICKLE_TYPE, check_if_match, ice_server_links, parse_sdpfrag
from avatar.server.sessions import Sessions
from avatar.server.whep import Publication, Resource, Viewer
from avatar.tasks import spawn

SDP_TYPE = "application/sdp"
PATHS = ("/whip", "/whip/{rid}", "/whep/{rid}", "/whep/{rid}/{vid}")
NO_RESOURCE = "no such WHIP/WHEP resource (it was deleted, or its session ended)"
EXPOSED = "Location, ETag, Link"  # response headers a cross-origin page may read
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


class WhipRoutes:
    """WHIP and WHEP for the sessions of this process (a
    :class:`~avatar.server.routes.RoutePart`); see the module docstring. ``choose_avatar`` turns
    the asked name (or None) into an avatar this server has."""

    def __init__(
        self,
        cfg: Config,
        gate: Gate,
        sessions: Sessions,
        clock: Clock,
        wall: Callable[[], float],
        choose_avatar: Callable[[str | None], str],
    ) -> None:
        self.cfg, self.gate, self.sessions, self.clock, self.wall = cfg, gate, sessions, clock, wall
        self.choose_avatar = choose_avatar
        self.published: dict[str, Publication] = {}  # by session id

    def add_routes(self, router: web.UrlDispatcher) -> None:
        whip, whip_res, whep, whep_res = PATHS
        router.add_post(whip, self.publish)
        router.add_post(whep, self.view)
        for path in PATHS:
            router.add_route("OPTIONS", path, self.preflight)
        for path in (whip_res, whep_res):
            router.add_patch(path, self.patch)
            router.add_delete(path, self.delete)
            router.add_get(path, self.exists)

    async def start(self, app: web.Application) -> None:
        """Nothing to start: resources come with offers."""

    async def stop(self, app: web.Application) -> None:
        for pub in list(self.published.values()):
            await self._end(pub)

    # -- creating resources ---------------------------------------------------------------------

    async def publish(self, request: web.Request) -> web.Response:
        """``POST /whip``: a session with the offer's audio as its microphone."""
        self.gate.admit_offer(request, SDP_TYPE)
        sdp = await _sdp(request, self.cfg)
        avatar = self.choose_avatar(request.query.get("avatar"))
        session, answer = await self.sessions.open(sdp, avatar, mic=True, publish=True)
        pub = Publication(session, _ufrag(sdp), self.cfg.server, self.clock)
        self.published[session.sid] = pub
        spawn(self._follow(pub), f"whip-{session.sid}")
        return self._created(f"/whip/{session.sid}.{session.key}", answer, pub.resource.etag)

    async def view(self, request: web.Request) -> web.Response:
        """``POST /whep/{id}``: one more viewer of a WHIP session's avatar."""
        self.gate.admit_offer(request, SDP_TYPE)
        rid = request.match_info["rid"]
        pub = self._publication(rid)
        sdp = await _sdp(request, self.cfg)
        viewer, answer = await pub.add_viewer(sdp, _ufrag(sdp), self.wall())
        return self._created(f"/whep/{rid}/{viewer.vid}", answer, viewer.resource.etag)

    def _created(self, location: str, answer: str, etag: str) -> web.Response:
        headers = CIMultiDict({"Location": location, "ETag": etag,
                               "Access-Control-Expose-Headers": EXPOSED})  # fmt: skip
        for link in ice_server_links(ice_servers(self.cfg.server, self.wall(), "whip")):
            headers.add("Link", link)
        return web.Response(status=201, body=answer.encode(), content_type=SDP_TYPE,
                            headers=headers)  # fmt: skip

    # -- changing and deleting them -------------------------------------------------------------

    async def patch(self, request: web.Request) -> web.Response:
        """Trickled ICE candidates for a resource's peer connection."""
        self.gate.admit_update(request)
        resource = self._resource(request)
        if request.content_type != TRICKLE_TYPE:
            raise RequestError(f"PATCH takes Content-Type: {TRICKLE_TYPE}", 415)
        check_if_match(request.headers.get("If-Match"), resource.etag)
        limit = self.cfg.server.limits.max_candidates
        frag = parse_sdpfrag(await _text(request), limit)
        await resource.trickle(frag, limit)
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        """The resource ends (an ETag it is sent is ignored, as RFC 9725 says)."""
        self.gate.admit_update(request)
        rid, vid = request.match_info["rid"], request.match_info.get("vid")
        pub = self._publication(rid)
        if vid is None:
            await self._end(pub)
        else:
            await pub.remove(self._viewer(pub, vid))
        return web.Response(status=200, headers={"Access-Control-Expose-Headers": EXPOSED})

    async def exists(self, request: web.Request) -> web.Response:
        """``GET`` a resource: no representation, 204 while it exists (the WHEP draft)."""
        self.gate.admit_update(request)
        self._resource(request)
        return web.Response(status=204)

    async def preflight(self, request: web.Request) -> web.Response:
        return await whip_preflight(request)

    # -- lookups and endings --------------------------------------------------------------------

    def _publication(self, rid: str) -> Publication:
        sid, _, key = rid.rpartition(".")
        pub = self.published.get(sid)
        if pub is None or not hmac.compare_digest(key.encode(), pub.session.key.encode()):
            raise RequestError(NO_RESOURCE, 404)
        SESSION.set(sid)
        return pub

    def _viewer(self, pub: Publication, vid: str) -> Viewer:
        viewer = pub.viewers.get(vid)
        if viewer is None:
            raise RequestError(NO_RESOURCE, 404)
        return viewer

    def _resource(self, request: web.Request) -> Resource:
        pub = self._publication(request.match_info["rid"])
        vid = request.match_info.get("vid")
        return pub.resource if vid is None else self._viewer(pub, vid).resource

    async def _follow(self, pub: Publication) -> None:
        """The session ended by itself (its peer left or failed): so do its resources."""
        await pub.session.closed.wait()
        await self._end(pub)

    async def _end(self, pub: Publication) -> None:
        self.published.pop(pub.session.sid, None)
        await pub.close_viewers()
        await self.sessions.close(pub.session, pub.session.reason or "client_left")


class WhipElsewhere:
    """The WHIP and WHEP routes of a role that does not hold sessions itself (the ``--workers``
    front): each answers a clear 501 instead of a misleading 404."""

    def __init__(self, why: str) -> None:
        self.why = why

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for path in PATHS:
            router.add_route("*", path, self.refuse)

    async def start(self, app: web.Application) -> None:
        """Nothing to start."""

    async def stop(self, app: web.Application) -> None:
        """Nothing to stop."""

    async def refuse(self, request: web.Request) -> web.Response:
        raise RequestError(self.why, 501)


async def whip_preflight(request: web.Request) -> web.Response:
    """CORS preflight of an allowed cross-origin page (the gate refused the others)."""
    return web.Response(status=200, headers={
        "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match",
        "Access-Control-Expose-Headers": EXPOSED, "Access-Control-Max-Age": "600",
        "Accept-Post": SDP_TYPE, "Accept-Patch": TRICKLE_TYPE,
    })  # fmt: skip


async def _text(request: web.Request) -> str:
    raw = await request.read()  # within server.limits.max_body_kb (413 past it)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8 text") from None


async def _sdp(request: web.Request, cfg: Config) -> str:
    """The offer of a POST, checked as ``POST /offer`` checks its SDP (400 when malformed)."""
    sdp = await _text(request)
    check_sdp(sdp, cfg.server.limits)
    return sdp


def _ufrag(sdp: str) -> str:
    found = _UFRAG.search(sdp)  # check_sdp made sure there is one
    return found.group(1) if found else ""
