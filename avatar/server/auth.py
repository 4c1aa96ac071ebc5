"""Who may open a session: signed, expiring tokens and the origins of pages.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256(secret, claims))`` with claims
``{"exp": unix seconds, "sub": who, "n": nonce}``; ``avatar token`` mints one with the server's
secret (``AVATAR_SECRET`` or ``server.auth.secret_file``). The page sends it as
``Authorization: Bearer ...`` with its offer. Once a session exists, its sockets are opened with
the session's own key (returned only in the answer to the offer); the session id alone, which
appears in logs and metrics, opens nothing.

Origins: a browser names the page's origin on every cross-origin request and on WebSockets. The
server's own origin is always allowed, others only if listed in ``server.auth.allowed_origins``.
Clients that send no ``Origin`` at all are not browsers (no page can make a browser drop it), so
they are not a cross-site risk and are let through to the token check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from avatar.config import AuthConfig, ServerConfig
from avatar.errors import ConfigError, RequestError

SECRET_ENV = "AVATAR_SECRET"
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    expires: int


def mint_token(secret: bytes, ttl_s: float, now: float, subject: str = "") -> str:
    claims = {"exp": int(now + ttl_s), "sub": subject, "n": secrets.token_hex(4)}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_b64(_sign(secret, body))}"


def verify_token(secret: bytes, token: str, now: float) -> Claims:
    """The token's claims, or :class:`RequestError` 401 (bad signature, malformed, expired)."""
    body, _, sig = token.partition(".")
    try:
        given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (binascii.Error, ValueError):
        given = b""
    if not body or not hmac.compare_digest(given, _sign(secret, body)):
        raise RequestError("invalid token", 401)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        expires, subject = int(claims["exp"]), str(claims.get("sub", ""))
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise RequestError("invalid token", 401) from None
    if expires <= now:
        raise RequestError("token expired: mint a new one with `avatar token`", 401)
    return Claims(subject, expires)


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def load_secret(cfg: AuthConfig) -> bytes | None:
    """The HMAC key: ``AVATAR_SECRET``, else ``secret_file``; None when neither is set."""
    value = os.environ.get(SECRET_ENV, "").encode()
    if not value and cfg.secret_file:
        try:
            value = Path(cfg.secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"server.auth.secret_file: {exc}") from None
    if value and len(value) < MIN_SECRET_BYTES:
        raise ConfigError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return value or None


def tokens_required(cfg: ServerConfig) -> bool:
    mode = cfg.auth.require_token
    return mode == "always" or (mode == "auto" and not is_loopback(cfg.host))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """Origins allowed to call the server besides its own (see the module docstring)."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.allowed = {o.rstrip("/").lower() for o in allowed if o != "*"}

    def check(self, origin: str | None, host: str | None) -> str | None:
        """The cross-origin caller to answer with CORS headers (None: same origin or not a
        browser); :class:`RequestError` 403 for an origin that is not allowed."""
        if origin is None:
            return None
        origin = origin.rstrip("/").lower()
        if host and origin.partition("://")[2] == host.lower():  # http or https (a TLS proxy)
            return None
        if self.any or origin in self.allowed:
            return origin
        raise RequestError(f"origin {origin[:100]!r} is not allowed (server.auth.allowed_origins)",
                           403)  # fmt: skip


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
