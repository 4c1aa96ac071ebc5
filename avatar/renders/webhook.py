"""The completion call of a render job: a signed POST to the job's ``webhook_url``.

The body is the job's status (what ``GET /v1/renders/{id}`` answers). The header
``X-Avatar-Signature: t=<unix seconds>,v1=<hex>`` carries HMAC-SHA256 of ``"<t>.<body>"`` under
the secret in ``AVATAR_WEBHOOK_SECRET``; a receiver recomputes it and refuses an old ``t``
(:func:`verify`). A job with a webhook is refused at submission when no secret is set. Delivery is
tried three times (1 s, 4 s apart); a receiver that never answers is logged, the job stays done.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable
from urllib.parse import urlparse

import aiohttp

from avatar.config import RendersConfig
from avatar.errors import RequestError

log = logging.getLogger("avatar.renders")
SECRET_ENV = "AVATAR_WEBHOOK_SECRET"
HEADER = "X-Avatar-Signature"
TRIES = (0.0, 1.0, 4.0)


def webhook_secret() -> bytes | None:
    value = os.environ.get(SECRET_ENV, "")
    return value.encode() if value else None


def sign(secret: bytes, body: bytes, t: int) -> str:
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, now: float, max_age_s: float = 300) -> bool:
    """What a receiver does: the signature matches and is at most ``max_age_s`` old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, t)
    return abs(now - t) <= max_age_s and hmac.compare_digest(expected, header)


async def notify(
    url: str, status: dict[str, object], cfg: RendersConfig, wall: Callable[[], float]
) -> bool:
    """POST ``status`` to ``url``, signed with the time ``wall`` says (Unix seconds); True when
    the receiver answered 2xx."""
    secret = webhook_secret()
    if secret is None:
        log.warning("webhook %s not called: %s is not set", url[:100], SECRET_ENV)
        return False
    body = json.dumps(status).encode()
    timeout = aiohttp.ClientTimeout(total=cfg.fetch_timeout_s)
    for delay in TRIES:
        await asyncio.sleep(delay)
        headers = {"Content-Type": "application/json", HEADER: sign(secret, body, int(wall()))}
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.post(url, data=body, headers=headers) as response:  # fmt: skip
                if 200 <= response.status < 300:
                    return True
                problem = f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            problem = f"{type(e).__name__}: {e}"[:160]
        log.warning("webhook %s: %s", url[:100], problem)
    return False


async def check_url(url: str, what: str, cfg: RendersConfig) -> None:
    """An http(s) URL whose host is public (loopback and private networks are refused unless
    ``renders.allow_private_urls``): a 422 otherwise. The server must not be a way into the
    network it runs in."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RequestError(f"{what} must be an http(s) URL", 422)
    if cfg.allow_private_urls:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parsed.hostname, parsed.port or 443,
                                                             type=socket.SOCK_STREAM)  # fmt: skip
    except OSError:
        raise RequestError(f"{what}: cannot resolve {parsed.hostname[:80]!r}", 422) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise RequestError(f"{what} points into a private network ({address}); "
                               "renders.allow_private_urls allows it", 422)  # fmt: skip
