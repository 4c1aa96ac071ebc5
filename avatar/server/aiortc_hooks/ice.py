"""Hooks on aioice: the host addresses ICE gathers on, and a UDP port range.

:func:`configure_ice`: ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`` (which skips
127.0.0.1) and the ``asyncio`` module aioice binds its UDP sockets through (for a port range).
aiortc builds its ``aioice.Connection`` objects itself, so these are process-wide (one server per
process).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import types
from typing import Any

import aioice.ice

from avatar.config import ServerConfig
from avatar.errors import ConfigError

_stock_get_host_addresses = aioice.ice.get_host_addresses


def _check_ice() -> str | None:
    params = list(inspect.signature(_stock_get_host_addresses).parameters)
    if params != ["use_ipv4", "use_ipv6"]:
        return "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) changed"
    src = inspect.getsource(aioice.ice)
    if "get_host_addresses(" not in src.split("def get_host_addresses", 1)[1]:
        return "aioice.ice no longer calls get_host_addresses"
    if "asyncio.get_running_loop()" not in src or "create_datagram_endpoint(" not in src:
        return "aioice.ice no longer binds sockets through asyncio.get_running_loop()"
    return None


# -- ICE: host addresses and a UDP port range -------------------------------------------------


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
