"""Every session's life in the pool, written once, and where each session lives.

A node records a session when it opens (:meth:`SessionLog.opened`: into ``sessions`` and its
``node-sessions:{id}``, an ``opened`` event in the ``log`` stream, ``counts`` +1) and when it closes
with a reason (:meth:`SessionLog.closed`). Both are Redis scripts, so a close is written exactly
once whoever writes it: the node itself, or the sweep (:meth:`SessionLog.sweep`), which one gateway
at a time runs under a lease and which closes every session of a node whose liveness expired as
``node_lost``. Hence, at any moment, ``opened = sum(closed) + active`` (:meth:`SessionLog.tally`),
where ``active`` counts the sessions of every node still registered, dead ones included until
swept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from avatar.cluster.keys import Keys, reply, unavailable

# the reasons a session ends; sessions.py and the sweep give one of them
REASONS = ("client_left", "failed", "never_connected", "reaped", "drained", "stopped", "error",
           "node_lost")  # fmt: skip
CLOSED_KEEP_MS = 24 * 3600 * 1000  # a close marker outlives any late second close

# KEYS: sessions, node-sessions:{node}, log, counts; ARGV: sid, node
OPEN_SCRIPT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'opened', 1)
redis.call('XADD', KEYS[3], '*', 'event', 'opened', 'session', ARGV[1], 'node', ARGV[2])
return 1
"""
# KEYS: sessions, node-sessions:{node}, log, counts, closed:{sid}; ARGV: sid, node, reason, keep ms
CLOSE_SCRIPT = """
if not redis.call('SET', KEYS[5], ARGV[3], 'NX', 'PX', ARGV[4]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'closed:' .. ARGV[3], 1)
redis.call('XADD', KEYS[3], '*', 'event', 'closed', 'session', ARGV[1], 'node', ARGV[2],
           'reason', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Tally:
    """The pool's session count: ``opened`` = ``sum(closed.values())`` + ``active``."""

    opened: int
    closed: dict[str, int] = field(default_factory=dict)  # reason -> sessions
    active: int = 0

    @property
    def balanced(self) -> bool:
        return self.opened == sum(self.closed.values()) + self.active


class SessionLog:
    """Sessions' lives and owners in Redis; see the module docstring."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._open = redis.register_script(OPEN_SCRIPT)
        self._close = redis.register_script(CLOSE_SCRIPT)

    async def opened(self, sid: str, node_id: str) -> None:
        k = self.keys
        keys = [k.sessions, k.node_sessions(node_id), k.log, k.counts]
        await self._run(self._open, keys, [sid, node_id])

    async def closed(self, sid: str, node_id: str, reason: str) -> bool:
        """Record the end of ``sid`` (False: it was recorded before, by anyone)."""
        if reason not in REASONS:
            raise ValueError(f"close reason {reason!r}: use one of {', '.join(REASONS)}")
        k = self.keys
        keys = [k.sessions, k.node_sessions(node_id), k.log, k.counts, k.closed(sid)]
        return bool(await self._run(self._close, keys, [sid, node_id, reason, CLOSED_KEEP_MS]))

    async def owner(self, sid: str) -> str | None:
        """The node that holds session ``sid`` (None: none, or it ended)."""
        try:
            node: str | None = await reply(self.redis.hget(self.keys.sessions, sid))
        except RedisError as exc:
            raise unavailable(exc) from exc
        return node

    async def tally(self) -> Tally:
        k = self.keys
        try:
            counts: Mapping[str, str] = await reply(self.redis.hgetall(k.counts))
            nodes = sorted(await reply(self.redis.smembers(k.nodes)))
            active = 0
            for node_id in nodes:
                active += await reply(self.redis.scard(k.node_sessions(node_id)))
        except RedisError as exc:
            raise unavailable(exc) from exc
        closed = {r[7:]: int(v) for r, v in counts.items() if r.startswith("closed:")}
        return Tally(int(counts.get("opened", 0)), closed, active)

    async def sweep(self, me: str, lease_s: float) -> list[str]:
        """If this gateway (``me``) holds or takes the sweeper lease: every registered node
        without liveness has its sessions closed as ``node_lost`` and leaves the registry.
        Returns the nodes swept."""
        k = self.keys
        lease_ms = round(lease_s * 1000)
        try:
            taken = await self.redis.set(k.sweeper, me, nx=True, px=lease_ms)
            if not taken:
                if await self.redis.get(k.sweeper) != me:
                    return []
                await self.redis.pexpire(k.sweeper, lease_ms)
            swept = []
            for node_id in sorted(await reply(self.redis.smembers(k.nodes))):
                if await self.redis.exists(k.alive(node_id)):
                    continue
                for sid in sorted(await reply(self.redis.smembers(k.node_sessions(node_id)))):
                    await self.closed(sid, node_id, "node_lost")
                await self.redis.delete(k.node(node_id), k.holds(node_id), k.node_sessions(node_id))
                await reply(self.redis.srem(k.nodes, node_id))
                swept.append(node_id)
        except RedisError as exc:
            raise unavailable(exc) from exc
        return swept

    async def _run(self, script: object, keys: list[str], args: list[str | int]) -> object:
        try:
            return await script(keys=keys, args=args)  # type: ignore[operator]
        except RedisError as exc:
            raise unavailable(exc) from exc
