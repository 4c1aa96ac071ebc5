"""``avatar serve``: the server, given the engines the configuration names."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from avatar.clock import Clock, MonotonicClock
from avatar.compose.engines import engine_factory
from avatar.config import Config
from avatar.server.app import AvatarServer


def make_server(cfg: Config, clock: Clock | None = None) -> AvatarServer:
    """The server with real engines and one executor shared by every session's work."""
    clock = clock or MonotonicClock()
    workers = cfg.engine.workers or os.cpu_count() or 2
    executor = ThreadPoolExecutor(workers, thread_name_prefix="engine")
    return AvatarServer(cfg, engine_factory(cfg, clock, executor), clock, executor)


async def serve(cfg: Config) -> None:
    """Run until cancelled (Ctrl-C)."""
    server = make_server(cfg)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, cfg.server.host, cfg.server.port)
    await site.start()
    hosts = ", ".join(cfg.server.ice_hosts) or "all non-loopback interfaces"
    print(
        f"avatar serve: http://{cfg.server.host}:{cfg.server.port}/  (ICE on {hosts})", flush=True
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
