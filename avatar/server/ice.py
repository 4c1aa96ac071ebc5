"""ICE settings aiortc does not expose: host addresses, a UDP port range, a public address.

aiortc builds its ``aioice.Connection`` objects itself, so these are process-wide hooks on aioice
(one server per process): :func:`configure_ice` replaces aioice's host-address discovery (which
skips 127.0.0.1) with the configured list and makes its sockets bind inside a port range.
:func:`rewrite_candidates` writes a public address into the answer's candidates for 1:1 NAT
(not tested across a real NAT here: these machines have none).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import re
import types
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from avatar.config import ServerConfig
from avatar.errors import ConfigError

_stock_get_host_addresses = aioice.ice.get_host_addresses


class _PortRangeLoop:
    """The running loop, except that UDP sockets asked for port 0 get one from the range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: itertools.cycle[int], n: int):
        self._loop, self._ports, self._n = loop, ports, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self, factory: Any, local_addr: Any = None, **kw: Any
    ) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kw)
        for _ in range(self._n):
            port = next(self._ports)
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, local_addr=(local_addr[0], port), **kw
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(
            errno.EADDRINUSE, f"no free UDP port left in the ICE range on {local_addr[0]}"
        )


def configure_ice(cfg: ServerConfig) -> None:
    """Apply ``cfg.ice_hosts`` and ``cfg.udp_ports`` to every connection made from now on."""
    hosts = list(cfg.ice_hosts)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if hosts:
            return [h for h in hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]
        return _stock_get_host_addresses(use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = host_addresses
    if cfg.udp_ports is None:
        aioice.ice.asyncio = asyncio
        return
    lo, hi = cfg.udp_ports
    if not 1024 <= lo <= hi <= 65535:
        raise ConfigError(f"server.udp_ports {lo}-{hi}: need 1024 <= low <= high <= 65535")
    ports = itertools.cycle(range(lo, hi + 1))
    shim = types.ModuleType("asyncio")
    shim.__dict__.update(asyncio.__dict__)
    shim.get_running_loop = lambda: _PortRangeLoop(  # type: ignore[attr-defined]
        asyncio.get_running_loop(), ports, hi - lo + 1
    )
    aioice.ice.asyncio = shim


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
