"""ICE settings through aiortc's public API: the servers offered, and a public address for 1:1 NAT.

Host addresses and the UDP port range need aioice internals: see
:func:`avatar.server.aiortc_hooks.configure_ice`. :func:`rewrite_candidates` writes a public
address into the answer's candidates for 1:1 NAT (not tested across a real NAT here).
"""

from __future__ import annotations

import re

from aiortc import RTCConfiguration, RTCIceServer

from avatar.config import ServerConfig


def rtc_configuration(cfg: ServerConfig) -> RTCConfiguration:
    """ICE servers as configured: none by default (aiortc's own default is a public STUN host)."""
    servers = [RTCIceServer(s.urls, s.username, s.credential) for s in cfg.ice_servers]
    return RTCConfiguration(iceServers=servers)


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host)", re.MULTILINE)


def rewrite_candidates(sdp: str, public_ip: str | None) -> str:
    """Offer ``public_ip`` instead of the local address in host candidates (1:1 NAT)."""
    if not public_ip:
        return sdp
    return _CANDIDATE.sub(lambda m: m.group(1) + public_ip + m.group(3), sdp)
