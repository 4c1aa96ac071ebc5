"""A node's record in the pool and its liveness.

A node publishes its record every ``cluster.heartbeat_s`` in one transaction: the ``node:{id}``
hash (what placement reads), ``alive:{id}`` holding its state with an expiry of
``cluster.alive_s`` (a hash entry outlives a dead node; a key that expires does not), and its id in
``nodes``. Its session count also changes the moment a session opens or ends (:meth:`add_sessions`,
by whichever of the node's processes holds the session), so a
gateway's slot hold can be released as soon as the node has answered. A draining node stays alive
but is never placed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from avatar.cluster.keys import Keys, reply, unavailable

State = Literal["serving", "draining"]
STATES: tuple[State, ...] = ("serving", "draining")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says of itself."""

    node_id: str
    address: str  # where gateways reach its HTTP, e.g. http://10.0.0.5:8080
    pool: str  # cpu, gpu...
    avatars: tuple[str, ...]  # the avatars it can open sessions of
    capacity: int  # sessions it holds at most
    sessions: int  # open now
    state: State = "serving"
    version: str = ""

    @property
    def load(self) -> float:
        return self.sessions / self.capacity if self.capacity > 0 else 1.0

    def fields(self) -> dict[str, str | int]:
        return {"address": self.address, "pool": self.pool, "avatars": ",".join(self.avatars),
                "capacity": self.capacity, "sessions": self.sessions, "state": self.state,
                "version": self.version}  # fmt: skip

    @classmethod
    def parse(cls, node_id: str, raw: Mapping[str, str]) -> NodeInfo | None:
        """The record as Redis holds it; None if it is not one (half written, foreign)."""
        try:
            state = raw["state"]
            if state not in STATES:
                return None
            return cls(node_id, raw["address"], raw["pool"],
                       tuple(a for a in raw.get("avatars", "").split(",") if a),
                       int(raw["capacity"]), int(raw["sessions"]), cast(State, state),
                       raw.get("version", ""))  # fmt: skip
        except (KeyError, ValueError):
            return None


class NodeRegistry:
    """Nodes' records and liveness in Redis; see the module docstring."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, alive_s: float) -> None:
        self.redis, self.keys, self.alive_ms = redis, keys, round(alive_s * 1000)

    async def publish(self, info: NodeInfo) -> None:
        """The node's record, state and liveness, at once."""
        k = self.keys
        try:
            async with self.redis.pipeline(transaction=True) as tx:
                tx.hset(k.node(info.node_id), mapping=info.fields())
                tx.set(k.alive(info.node_id), info.state, px=self.alive_ms)
                tx.sadd(k.nodes, info.node_id)
                await tx.execute()
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def add_sessions(self, node_id: str, delta: int) -> None:
        """One more (or fewer) session on the node, counted at once: the worker processes of a
        node each add theirs (the next record the node publishes carries the whole count)."""
        try:
            await reply(self.redis.hincrby(self.keys.node(node_id), "sessions", delta))
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def leave(self, node_id: str) -> None:
        """The node stops at once (its sessions are closed by it, not swept)."""
        k = self.keys
        try:
            await self.redis.delete(k.alive(node_id), k.node(node_id), k.holds(node_id))
            await reply(self.redis.srem(k.nodes, node_id))
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def nodes(self) -> list[tuple[NodeInfo, bool]]:
        """Every registered node's record, and whether it is alive (dead ones until swept)."""
        k = self.keys
        try:
            ids = sorted(await reply(self.redis.smembers(k.nodes)))
            async with self.redis.pipeline(transaction=False) as p:
                for node_id in ids:
                    p.hgetall(k.node(node_id))
                    p.get(k.alive(node_id))
                raw = await p.execute()
        except RedisError as exc:
            raise unavailable(exc) from exc
        out = []
        for i, node_id in enumerate(ids):
            info = NodeInfo.parse(node_id, raw[2 * i])
            state = raw[2 * i + 1]
            if info is not None:  # liveness says the state: a drain is seen at once
                out.append((_with_state(info, state), state is not None))
        return out

    async def candidates(self, pool: str, avatar: str) -> list[NodeInfo]:
        """Live, serving nodes of ``pool`` that have ``avatar``."""
        nodes = await self.nodes()
        return [
            n
            for n, alive in nodes
            if alive and n.state == "serving" and n.pool == pool and avatar in n.avatars
        ]


def _with_state(info: NodeInfo, state: str | None) -> NodeInfo:
    if state not in STATES or state == info.state:
        return info
    return replace(info, state=cast(State, state))
