"""The gate every request passes: page origins and CORS, tokens, request rates, JSON errors.

Each role (the single-process server, the ``--workers`` front) puts one :class:`Gate` in front of
its routes. The gate decides who may come in and how every refusal looks; it holds no sessions.

Every refusal is a JSON ``{"error": message}`` with a 4xx status (400 a malformed request or a
body that does not decode, 401 token, 403 origin, 404 unknown, 413 too large, 415 not JSON, 429
rate, 503 full with ``Retry-After``); a 500 says only "internal error" and the log has the rest.
See :mod:`avatar.server.auth` for tokens and origins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import Counter

from avatar.clock import Clock
from avatar.config import ServerConfig
from avatar.errors import AvatarError, RequestError
from avatar.server.auth import OriginPolicy, bearer, load_secret, tokens_required, verify_token
from avatar.server.limits import RateLimiter

log = logging.getLogger("avatar.server")
ORIGIN_CHECKED = ("/offer", "/ws", "/ws/audio", "/api/", "/v1/", "/whip", "/whep")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate:
    """Who may come in (see the module docstring). ``refused`` counts refusals by reason."""

    def __init__(
        self, cfg: ServerConfig, clock: Clock, wall: Callable[[], float], refused: Counter
    ) -> None:
        self.wall, self.refused = wall, refused  # wall: Unix seconds, for token expiry
        self.secret = load_secret(cfg.auth)
        self.require_token = tokens_required(cfg)
        if self.require_token and self.secret is None:
            raise AvatarError(
                f"serving on {cfg.host} needs session tokens: set AVATAR_SECRET (or "
                "server.auth.secret_file), mint tokens with `avatar token`; or bind 127.0.0.1"
            )
        self.origins = OriginPolicy(cfg.auth.allowed_origins)
        lim = cfg.limits
        self.offer_rate = RateLimiter(clock, lim.offers_per_minute, lim.offer_burst)
        self.socket_rate = RateLimiter(clock, lim.sockets_per_minute, 2 * lim.offer_burst)
        self.job_rate = RateLimiter(clock, lim.jobs_per_minute, lim.job_burst)

    def admit_offer(self, request: web.Request, content_type: str = "application/json") -> None:
        """An offer within its client's rate, with a valid token, in ``content_type`` (JSON for
        ``/offer``, SDP for WHIP and WHEP)."""
        self._rate(self.offer_rate, request, "offers")
        self.authenticate(request)
        if request.content_type != content_type:
            where = "/" + request.path.split("/")[1][:20]  # not the session's key that follows
            raise RequestError(f"{request.method} {where} takes Content-Type: {content_type}", 415)

    def admit_update(self, request: web.Request) -> None:
        """A change to a session's resource (WHIP/WHEP PATCH, DELETE) within its client's rate,
        with a valid token."""
        self._rate(self.socket_rate, request, "session updates")
        self.authenticate(request)

    def admit_job(self, request: web.Request) -> None:
        """A render job within its client's rate, with a valid token."""
        self._rate(self.job_rate, request, "render jobs")
        self.authenticate(request)

    def admit_socket(self, request: web.Request) -> None:
        """A socket within its client's rate (its session's key is checked by the sessions)."""
        self._rate(self.socket_rate, request, "sockets")

    def authenticate(self, request: web.Request) -> None:
        if not self.require_token:
            return
        token = bearer(request.headers.get("Authorization")) or request.query.get("token")
        if not token:
            raise RequestError("this server needs a token: Authorization: Bearer <token> "
                               "(mint one with `avatar token`)", 401)  # fmt: skip
        assert self.secret is not None
        verify_token(self.secret, token, self.wall())

    def _rate(self, limiter: RateLimiter, request: web.Request, what: str) -> None:
        retry = limiter.take(request.remote or "?")
        if retry > 0:
            self.refused.labels("rate").inc()
            raise RequestError(f"too many {what} from your address: retry in {retry:.0f} s",
                               429, retry_after_s=retry)  # fmt: skip

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Origin policy and CORS, then the handler; every refusal as a JSON error."""
        cors = None
        try:
            if request.path.startswith(ORIGIN_CHECKED):
                cors = self.origins.check(request.headers.get("Origin"), request.host)
            response = await handler(request)
        except RequestError as exc:
            self.refused.labels(str(exc.status)).inc()
            response = error_response(str(exc), exc.status, exc.retry_after_s)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(exc.reason, exc.status)
        except RequestPayloadError as exc:  # a body that does not decode (bad gzip, deflate)
            log.warning("%s %s: unreadable body: %s", request.method, request.path,
                        " ".join(str(exc).split())[:160])  # fmt: skip
            self.refused.labels("400").inc()
            response = error_response(_payload_error(request), 400)
            response.force_close()  # the rest of that body cannot be read: no keep-alive
        except AvatarError as exc:  # e.g. an avatar folder that fails to load
            log.error("%s %s: %s", request.method, request.path, exc)
            response = error_response(f"the server could not do this: {str(exc)[:200]}", 500)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = error_response("internal error", 500)
        if cors is not None and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = cors
            response.headers["Vary"] = "Origin"
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        """CORS preflight of an allowed cross-origin page (the middleware refused the others)."""
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Authorization, Idempotency-Key",
            "Access-Control-Max-Age": "600",
        })  # fmt: skip


def _payload_error(request: web.Request) -> str:
    encoding = request.headers.get("Content-Encoding", "")[:20]
    if encoding:
        return f"the body does not decode as Content-Encoding: {encoding}"
    return "the body could not be read"


def error_response(message: str, status: int, retry_after_s: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return web.json_response({"error": message}, status=status, headers=headers)
