"""A node of the pool: ``avatar serve --role node``, today's server registered in Redis.

:class:`NodeAgent` is composed into the server's sessions as a watcher
(:class:`~avatar.server.sessions.SessionWatcher`) and runs one task that publishes the node's
record every ``cluster.heartbeat_s`` (:mod:`avatar.cluster.registry`). Every Redis write goes
through one ordered queue, so a session's close can never reach Redis before its open; a
session's open is written (and the node's session count with it) before its answer leaves, which
is what lets a gateway release its slot hold as soon as it has the answer.

Redis going away stops nothing: sessions open and run, writes wait in the queue (bounded: the
oldest heartbeat goes first) and the record is published again when Redis answers; one log line
when it goes, one when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from avatar import __version__
from avatar.clock import Clock, sleep_for
from avatar.cluster.deletion_cost import PodDeletionCost
from avatar.cluster.keys import ClusterUnavailable
from avatar.cluster.records import SessionLog
from avatar.cluster.registry import NodeInfo, NodeRegistry, State
from avatar.config import Config
from avatar.server.session import Session
from avatar.server.workers import OPEN
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.cluster")
OPEN_WAIT_S = 3.0  # an answer waits at most this long for its session's record


def node_id(configured: str) -> str:
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def node_config(cfg: Config) -> Config:
    """What a node runs: its offers and sockets come through the gateways, so per-client rates
    are theirs to enforce (a node's limiter would see one client per gateway). Tokens stay: a
    gateway passes the page's on. Its id is fixed here, so a node's worker processes share it."""
    limits = cfg.server.limits.model_copy(update={
        "offers_per_minute": OPEN, "offer_burst": int(OPEN), "sockets_per_minute": OPEN,
    })  # fmt: skip
    cluster = cfg.server.cluster.model_copy(update={"node_id": node_id(cfg.server.cluster.node_id)})
    server = cfg.server.model_copy(update={"limits": limits, "cluster": cluster})
    return cfg.model_copy(update={"server": server})


@dataclass
class NodeAgent:
    """The node's record, liveness and session records; see the module docstring.
    ``sessions()``: the sessions open now."""

    registry: NodeRegistry
    records: SessionLog
    clock: Clock
    node_id: str
    address: str
    pool: str
    avatars: tuple[str, ...]
    capacity: int
    sessions: Callable[[], int]
    heartbeat_s: float = 1.0
    cost: PodDeletionCost | None = None  # in a Kubernetes pod: its deletion cost = sessions
    state: State = "serving"
    _writes: asyncio.Queue[tuple[Callable[[], Awaitable[object]], asyncio.Future[None] | None]] = (
        field(default_factory=lambda: asyncio.Queue(1000))
    )
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _down = False

    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, self.address, self.pool, self.avatars, self.capacity,
                        self.sessions(), self.state, __version__)  # fmt: skip

    def start(self, heartbeats: bool = True) -> None:
        """The writer, and the heartbeats (not in a worker process of a node: its front
        publishes the node's record; the worker only records its sessions)."""
        self._tasks = [spawn(self._writer(), "cluster-writer")]
        if heartbeats:
            self._tasks.append(spawn(self._heartbeats(), "cluster-heartbeat"))

    async def stop(self, leave: bool = True) -> None:
        """Leave the pool (after the sessions were closed and recorded); a worker of a node
        only writes what it still has to."""
        await self._flush()
        await cancel(*self._tasks)
        if not leave:
            return
        try:
            await self.registry.leave(self.node_id)
        except ClusterUnavailable as exc:
            log.warning("leaving the pool: %s (the sweep will remove this node)", exc)

    async def drain(self) -> None:
        """No new placements from now on (the liveness key says so at once)."""
        self.state = "draining"
        self._put(lambda: self.registry.publish(self.info()))
        await self._flush()

    # -- the sessions' watcher --------------------------------------------------------------

    async def opened(self, session: Session) -> None:
        sid = session.sid
        done = self._put(lambda: self._opened(sid))
        try:
            await asyncio.wait_for(asyncio.shield(done), OPEN_WAIT_S)
        except TimeoutError:  # Redis is slow or away: the answer goes; the record follows
            log.warning("session %s: its record waits for the pool's Redis", sid)

    def closed(self, session: Session, reason: str) -> None:
        sid = session.sid
        self._put(lambda: self._closed(sid, reason))

    async def _opened(self, sid: str) -> None:
        await self.records.opened(sid, self.node_id)
        await self.registry.add_sessions(self.node_id, 1)

    async def _closed(self, sid: str, reason: str) -> None:
        if await self.records.closed(sid, self.node_id, reason):  # not already swept
            await self.registry.add_sessions(self.node_id, -1)

    # -- the one writer ---------------------------------------------------------------------

    def _put(self, write: Callable[[], Awaitable[object]]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._writes.full():  # a long outage: the oldest write goes (a heartbeat, mostly)
            _, dropped = self._writes.get_nowait()
            if dropped is not None and not dropped.done():
                dropped.set_result(None)
        self._writes.put_nowait((write, done))
        return done

    async def _flush(self) -> None:
        await asyncio.wait_for(asyncio.shield(self._put(_nothing)), OPEN_WAIT_S + 1)

    async def _writer(self) -> None:
        while True:
            write, done = await self._writes.get()
            while True:
                try:
                    await write()
                    break
                except ClusterUnavailable as exc:
                    if not self._down:
                        log.warning("%s; sessions go on, their records wait", exc)
                        self._down = True
                    await sleep_for(self.clock, self.heartbeat_s)
            if self._down:
                log.warning("the pool's Redis answers again")
                self._down = False
            if done is not None and not done.done():
                done.set_result(None)

    async def _heartbeats(self) -> None:
        while True:
            if self._writes.empty():  # while Redis is away, one heartbeat waits, not many
                self._put(lambda: self.registry.publish(self.info()))
            if self.cost is not None:
                await self.cost.set(self.sessions())
            await sleep_for(self.clock, self.heartbeat_s)


async def _nothing() -> None:
    return None
