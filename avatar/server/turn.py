"""Short-lived TURN credentials from a secret shared with coturn (its "TURN REST API").

coturn started with ``use-auth-secret`` and ``static-auth-secret=SECRET`` keeps no user list: it
accepts a long-term-credential username of the form ``<expiry>:<user>`` (``expiry`` in Unix
seconds) whose password is ``base64(HMAC-SHA1(SECRET, username))``, until ``expiry`` passes.
So the server can hand each page its own credentials without ever sending it the secret (see
coturn's ``turnserver.conf``: ``use-auth-secret``, ``static-auth-secret``, and the draft
"A REST API For Access To TURN Services", draft-uberti-behave-turn-rest-00).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from avatar.config import IceServer
from avatar.errors import ConfigError


def turn_credentials(secret: str, urls: list[str], ttl_s: int, user: str, now: float) -> IceServer:
    """One ICE server entry for ``urls`` with credentials valid from ``now`` for ``ttl_s`` s.

    ``now`` is Unix time in seconds (injected: the expiry is the only wall-clock value here);
    ``user`` only labels the allocation in coturn's log and must not contain ``:``.
    """
    if not secret:
        raise ConfigError("TURN shared secret is empty: use coturn's static-auth-secret value")
    if ttl_s <= 0:
        raise ConfigError(f"TURN credential lifetime must be positive, got {ttl_s} s")
    if ":" in user:
        raise ConfigError(f"TURN user label {user!r} must not contain ':'")
    username = f"{int(now) + ttl_s}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    password = base64.b64encode(digest).decode()
    return IceServer(urls=list(urls), username=username, credential=password)
