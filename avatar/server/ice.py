"""ICE through aiortc's public API: the servers offered, a public address for 1:1 NAT, and the
candidates a page trickles.

Host addresses and the UDP port range need aioice internals: see
:func:`avatar.server.aiortc_hooks.configure_ice`. :func:`rewrite_candidates` writes a public
address into the answer's candidates for 1:1 NAT (not tested across a real NAT here).
"""

from __future__ import annotations

import os
import re
from typing import Any

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from avatar.config import IceServer, ServerConfig
from avatar.errors import RequestError
from avatar.server.offer import check_candidate

TURN_SECRET_ENV = "AVATAR_TURN_SECRET"


def ice_servers(cfg: ServerConfig, now: float, user: str = "avatar") -> list[IceServer]:
    """``server.ice_servers``, plus ``server.turn_urls`` with short-lived credentials from the
    shared secret (``AVATAR_TURN_SECRET``) when both are set."""
    servers = list(cfg.ice_servers)
    secret = os.environ.get(TURN_SECRET_ENV, "")
    if cfg.turn_urls and secret:
        from avatar.server.turn import turn_credentials

        servers.append(turn_credentials(secret, cfg.turn_urls, cfg.turn_ttl_s, user, now))
    return servers


def ice_servers_for_page(cfg: ServerConfig, now: float) -> list[dict[str, Any]]:
    """The same, as ``RTCPeerConnection({iceServers})`` takes them in a browser."""
    return [s.model_dump(exclude_none=True) for s in ice_servers(cfg, now, "page")]


def rtc_configuration(cfg: ServerConfig, now: float) -> RTCConfiguration:
    """ICE servers as configured: none by default (aiortc's own default is a public STUN host)."""
    servers = [RTCIceServer(s.urls, s.username, s.credential) for s in ice_servers(cfg, now)]
    return RTCConfiguration(iceServers=servers)


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host)", re.MULTILINE)


def rewrite_candidates(sdp: str, public_ip: str | None) -> str:
    """Offer ``public_ip`` instead of the local address in host candidates (1:1 NAT)."""
    if not public_ip:
        return sdp
    return _CANDIDATE.sub(lambda m: m.group(1) + public_ip + m.group(3), sdp)


def trickled_candidate(cand: Any) -> RTCIceCandidate | None:
    """A candidate the page trickled, checked: ``{"candidate": str, "sdpMid"?: str,
    "sdpMLineIndex"?: int}``; None for an empty one (the end of candidates)."""
    if cand is None or cand == {} or (isinstance(cand, dict) and cand.get("candidate") == ""):
        return None
    if not isinstance(cand, dict) or not isinstance(cand.get("candidate"), str):
        raise RequestError('a candidate is {"candidate": "candidate:...", "sdpMid": ...}')
    mid, index = cand.get("sdpMid"), cand.get("sdpMLineIndex")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 32):
        raise RequestError("sdpMid must be a short string")
    if index is not None and (type(index) is not int or not 0 <= index < 64):
        raise RequestError("sdpMLineIndex must be a small integer")
    text = cand["candidate"][:512].removeprefix("candidate:")
    check_candidate(text)
    ice: RTCIceCandidate = candidate_from_sdp(text)
    ice.sdpMid, ice.sdpMLineIndex = mid, index
    return ice


async def add_candidate(pc: RTCPeerConnection, ice: RTCIceCandidate) -> None:
    try:
        await pc.addIceCandidate(ice)
    except Exception as exc:  # aiortc: no transceiver with that mid, closed connection...
        raise RequestError(f"ICE candidate refused: {str(exc)[:120]}") from None
