"""``avatar serve``: the server, given the engines the configuration names.

With ``server.workers`` > 1 (or ``auto``) this process is the front (:mod:`avatar.server.front`)
and the sessions live in worker processes, each ``avatar serve --worker-of FRONT_PID``
(:func:`serve_worker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from aiohttp import web

from avatar.clock import Clock, MonotonicClock, sleep_for
from avatar.cluster.deletion_cost import PodDeletionCost
from avatar.cluster.gateway import GatewayServer
from avatar.cluster.keys import Keys, connect
from avatar.cluster.node import NodeAgent, node_config
from avatar.cluster.records import SessionLog
from avatar.cluster.registry import NodeRegistry
from avatar.compose.engines import engine_factory, executor_workers
from avatar.compose.renders import renders_part
from avatar.config import Config
from avatar.face.store import builtin_names
from avatar.memory import limit_arenas
from avatar.server.aiortc_hooks import install_hooks
from avatar.server.app import AvatarServer
from avatar.server.auth import is_loopback
from avatar.server.front import FrontServer
from avatar.server.ice import TURN_SECRET_ENV
from avatar.server.logs import quiet_bad_requests
from avatar.server.sessions import EngineFactory
from avatar.server.workers import WorkerPool, watch_parent, worker_count
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.server")


def make_server(
    cfg: Config,
    clock: Clock | None = None,
    engines: Callable[[Clock, Executor], EngineFactory] | None = None,
    sid_prefix: str = "",
    renders: bool = True,
) -> AvatarServer:
    """The server with real engines (or those ``engines`` makes for its clock and executor)
    and one executor shared by every session's work; aiortc's hooks installed. ``renders``:
    with the render jobs' routes (a front's workers have none: the front has them)."""
    clock = clock or MonotonicClock()
    executor = ThreadPoolExecutor(executor_workers(cfg.engine), thread_name_prefix="engine")
    factory = (engines or partial(engine_factory, cfg))(clock, executor)
    install_hooks(cfg.server)
    quiet_bad_requests()
    jobs = renders_part(cfg, clock) if renders else None
    return AvatarServer(cfg, factory, clock, executor, sid_prefix=sid_prefix, renders=jobs)


async def serve(cfg: Config) -> None:
    """Run until SIGTERM or SIGINT, then drain: no new sessions, open ones get
    ``server.drain_s`` to finish (they are told with a ``shutdown`` event). With
    ``server.cluster.role`` a gateway of a node pool, or a node registered in it."""
    role = cfg.server.cluster.role
    if role == "gateway":
        await _serve_gateway(cfg)
        return
    if role == "node":
        cfg = node_config(cfg)
    workers = worker_count(cfg.server)
    if workers > 1:
        await _serve_front(cfg, workers)
        return
    limit_arenas()  # before the executor's threads allocate anything
    server = make_server(cfg)
    node = None
    if role == "node":
        node = node_agent(cfg, server.sessions.clock, lambda: len(server.sessions))
        server.sessions.add_watcher(node)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, cfg.server.host, cfg.server.port)
    await site.start()
    if node is not None:
        node.start()
    _announce(cfg, server, f"node {node.node_id} of pool {node.pool!r}; " if node else "")
    try:
        await _until_signal()
        log.warning("shutting down: draining %d sessions (up to %.0f s)",
                    len(server.sessions), cfg.server.drain_s)  # fmt: skip
        if node is not None:
            await node.drain()
        await server.drain(cfg.server.drain_s)
    finally:
        if node is not None:
            await node.stop()
            await node.registry.redis.aclose()
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)


def node_agent(
    cfg: Config, clock: Clock, sessions: Callable[[], int], capacity: int | None = None
) -> NodeAgent:
    """This process as (a part of) node ``server.cluster.node_id`` of the pool: ``sessions``
    says how many it holds, ``capacity`` how many it may (default ``server.max_sessions``)."""
    cc, sc = cfg.server.cluster, cfg.server
    redis = connect(cc.redis)
    keys = Keys(cc.prefix)
    avatars = tuple(dict.fromkeys([*builtin_names(), cfg.render.avatar]))
    address = cc.advertise or f"http://{sc.host}:{sc.port}"
    return NodeAgent(NodeRegistry(redis, keys, cc.alive_s), SessionLog(redis, keys), clock,
                     cc.node_id, address, cc.pool, avatars, capacity or sc.max_sessions, sessions,
                     cc.heartbeat_s, PodDeletionCost.in_cluster())  # fmt: skip


async def _serve_gateway(cfg: Config) -> None:
    """A gateway of the node pool: pages, offers placed on nodes, sockets relayed."""
    clock = MonotonicClock()
    quiet_bad_requests()
    server = GatewayServer(cfg, clock, renders=renders_part(cfg, clock))
    runner = web.AppRunner(server.app())
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.server.host, cfg.server.port).start()
        _announce(cfg, server, f"gateway of pool {cfg.server.cluster.pool!r}; ")
        await _until_signal()
    finally:
        await runner.cleanup()


async def _serve_front(cfg: Config, n: int) -> None:
    """The public address and ``n`` worker processes; SIGTERM drains them all. As a pool's
    node, the front publishes the node's record (its workers' sessions summed, ``n`` times
    their capacity) and each worker records its own sessions under the node's id."""
    clock = MonotonicClock()
    pool = WorkerPool(cfg, n, clock)
    quiet_bad_requests()
    server = FrontServer(cfg, pool, clock, renders=renders_part(cfg, clock))
    count = [0]
    node = None
    if cfg.server.cluster.role == "node":
        node = node_agent(cfg, clock, lambda: count[0], n * cfg.server.max_sessions)
    runner = web.AppRunner(server.app())
    await runner.setup()
    tasks = []
    try:
        await web.TCPSite(runner, cfg.server.host, cfg.server.port).start()
        await pool.start()
        if node is not None:
            tasks.append(spawn(_count_sessions(pool, count, node.heartbeat_s, clock), "count"))
            node.start()
        what = f"node {node.node_id} of pool {node.pool!r}; " if node else ""
        _announce(cfg, server, f"{what}{n} worker processes; ")
        await _until_signal()
        log.warning("shutting down: draining %d workers (up to %.0f s)", n, cfg.server.drain_s)
        if node is not None:
            await node.drain()
        await server.drain(cfg.server.drain_s)
    finally:
        await pool.stop(timeout_s=5.0)  # at once if they were not drained
        await cancel(*tasks)
        if node is not None:
            await node.stop()
            await node.registry.redis.aclose()
        await runner.cleanup()


async def _count_sessions(pool: WorkerPool, count: list[int], every_s: float, clock: Clock) -> None:
    """``count[0]``: the sessions the workers hold, asked every ``every_s``."""
    while True:
        answers = await pool.ask_all("/readyz")
        count[0] = sum(int(b.get("sessions", 0)) for _, _s, b in answers if isinstance(b, dict))
        await sleep_for(clock, every_s)


async def serve_worker(cfg: Config, index: int, socket: Path, front_pid: int) -> None:
    """One worker of a front: sessions on a unix socket, ids ``w<index>.``; drains on SIGTERM,
    stops at once when the front is gone."""
    limit_arenas()
    clock = MonotonicClock()
    server = make_server(cfg, clock, sid_prefix=f"w{index}.", renders=False)
    node = None
    if cfg.server.cluster.role == "node":  # its sessions, recorded under its front's node id
        node = node_agent(cfg, clock, lambda: len(server.sessions))
        server.sessions.add_watcher(node)
        node.start(heartbeats=False)
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.UnixSite(runner, str(socket)).start()
    signalled = spawn(_until_signal(), f"signals-{index}")
    front_gone = spawn(watch_parent(front_pid, clock), f"watch-front-{index}")
    try:
        done, _ = await asyncio.wait([signalled, front_gone], return_when=asyncio.FIRST_COMPLETED)
        await server.drain(0.0 if front_gone in done else cfg.server.drain_s)
    finally:
        if node is not None:
            await node.stop(leave=False)
            await node.registry.redis.aclose()
        await cancel(signalled, front_gone)
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)


async def _until_signal() -> None:
    """Until SIGTERM or SIGINT (a second one is not caught: it stops the process at once)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()


def _announce(cfg: Config, server: AvatarServer | FrontServer | GatewayServer, what: str) -> None:
    hosts = ", ".join(cfg.server.ice_hosts) or "all non-loopback interfaces"
    auth = "tokens required" if server.gate.require_token else "no tokens"
    print(f"avatar serve: http://{cfg.server.host}:{cfg.server.port}/  ({what}ICE on {hosts}; "
          f"{auth})", flush=True)  # fmt: skip
    if cfg.server.turn_urls and not os.environ.get(TURN_SECRET_ENV):
        log.warning("server.turn_urls is set but %s is not: no TURN credentials are handed "
                    "out", TURN_SECRET_ENV)  # fmt: skip
    if not is_loopback(cfg.server.host) and not cfg.server.auth.allowed_origins:
        log.warning("serving on %s: pages on other origins are refused "
                    "(server.auth.allowed_origins)", cfg.server.host)  # fmt: skip
