"""``avatar serve``: the server, given the engines the configuration names."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from avatar.clock import Clock, MonotonicClock
from avatar.compose.engines import engine_factory
from avatar.config import Config
from avatar.memory import limit_arenas
from avatar.server.app import AvatarServer
from avatar.server.auth import is_loopback
from avatar.server.ice import TURN_SECRET_ENV

log = logging.getLogger("avatar.server")


def make_server(cfg: Config, clock: Clock | None = None) -> AvatarServer:
    """The server with real engines and one executor shared by every session's work."""
    clock = clock or MonotonicClock()
    workers = cfg.engine.workers or os.cpu_count() or 2
    executor = ThreadPoolExecutor(workers, thread_name_prefix="engine")
    return AvatarServer(cfg, engine_factory(cfg, clock, executor), clock, executor)


async def serve(cfg: Config) -> None:
    """Run until SIGTERM or SIGINT, then drain: no new sessions, open ones get
    ``server.drain_s`` to finish (they are told with a ``shutdown`` event)."""
    limit_arenas()  # before the executor's threads allocate anything
    server = make_server(cfg)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, cfg.server.host, cfg.server.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # a second signal is not caught: it stops at once
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    hosts = ", ".join(cfg.server.ice_hosts) or "all non-loopback interfaces"
    auth = "tokens required" if server.require_token else "no tokens"
    print(f"avatar serve: http://{cfg.server.host}:{cfg.server.port}/  (ICE on {hosts}; "
          f"{auth})", flush=True)  # fmt: skip
    if cfg.server.turn_urls and not os.environ.get(TURN_SECRET_ENV):
        log.warning("server.turn_urls is set but %s is not: no TURN credentials are handed "
                    "out", TURN_SECRET_ENV)  # fmt: skip
    if not is_loopback(cfg.server.host) and not cfg.server.auth.allowed_origins:
        log.warning("serving on %s: pages on other origins are refused "
                    "(server.auth.allowed_origins)", cfg.server.host)  # fmt: skip
    try:
        await stop.wait()
        log.warning("shutting down: draining %d sessions (up to %.0f s)",
                    len(server.sessions), cfg.server.drain_s)  # fmt: skip
        await server.drain(cfg.server.drain_s)
    finally:
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)
