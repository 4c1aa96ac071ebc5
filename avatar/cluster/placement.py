"""Where a new session goes: power of two choices, the slot held atomically in Redis.

A gateway reads the candidates (:meth:`NodeRegistry.candidates`: live, serving, the asked pool,
the avatar), picks two at random and lets :data:`HOLD_SCRIPT` decide inside Redis: of the two, the
one with the lower ``(sessions + holds) / capacity`` that still has room gets a hold (a member of
``holds:{id}`` that expires after ``cluster.hold_s``). The script re-reads liveness, state,
capacity, sessions and holds itself, so gateways racing on stale reads can never put more sessions
on a node than it holds. If neither of the two has room, the others are tried least loaded first;
none: :meth:`Placer.place` returns None (the gateway answers 503 with ``Retry-After``).

The node counts the session before it answers (:meth:`NodeRegistry.add_sessions`); the
gateway then releases its hold (:meth:`Placer.release`). A gateway that dies meanwhile leaves a
hold that expires by itself.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from avatar.cluster.keys import Keys, unavailable
from avatar.cluster.registry import NodeInfo, NodeRegistry

# KEYS: per candidate its node hash, alive key and holds zset; ARGV: the hold's token, its length
# (ms), then the candidates' ids. Returns the id of the node that got the hold, or nil.
HOLD_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local best, best_load = nil, nil
for i = 1, #KEYS / 3 do
  local node, alive, holds = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('GET', alive) == 'serving' then
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    local cap = tonumber(redis.call('HGET', node, 'capacity')) or 0
    local used = (tonumber(redis.call('HGET', node, 'sessions')) or 0) + redis.call('ZCARD', holds)
    if used < cap and (best == nil or used / cap < best_load) then
      best, best_load = i, used / cap
    end
  end
end
if best == nil then return nil end
redis.call('ZADD', KEYS[3 * best], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[3 * best], ARGV[2])
return ARGV[2 + best]
"""


@dataclass(frozen=True, slots=True)
class Hold:
    """A slot held on ``node`` for one offer."""

    node: NodeInfo
    token: str


class Placer:
    """One gateway's placement; see the module docstring."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, registry: NodeRegistry, hold_s: float,
        rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self.redis, self.keys, self.registry = redis, keys, registry
        self.hold_ms = round(hold_s * 1000)
        self.rng = rng or random.Random()
        self._script = redis.register_script(HOLD_SCRIPT)

    async def place(
        self, pool: str, avatar: str, exclude: frozenset[str] = frozenset()
    ) -> Hold | None:
        """A hold on a node for a new session of ``avatar`` in ``pool`` (None: all full);
        ``exclude``: nodes that already refused this offer."""
        nodes = [
            n for n in await self.registry.candidates(pool, avatar) if n.node_id not in exclude
        ]
        for group in self.choices(nodes):
            hold = await self._hold(group)
            if hold is not None:
                return hold
        return None

    def choices(self, nodes: list[NodeInfo]) -> list[list[NodeInfo]]:
        """Two at random first, then the others one by one, least loaded first."""
        if len(nodes) <= 2:
            return [nodes] if nodes else []
        two = self.rng.sample(nodes, 2)
        rest = sorted((n for n in nodes if n not in two), key=lambda n: n.load)
        return [two, *([n] for n in rest)]

    async def release(self, hold: Hold) -> None:
        """The node has counted the session (or refused it): the hold goes."""
        try:
            await self.redis.zrem(self.keys.holds(hold.node.node_id), hold.token)
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def _hold(self, group: list[NodeInfo]) -> Hold | None:
        k, token = self.keys, secrets.token_urlsafe(9)
        keys = [
            x for n in group for x in (k.node(n.node_id), k.alive(n.node_id), k.holds(n.node_id))
        ]
        try:
            chosen = await self._script(
                keys=keys, args=[token, self.hold_ms, *(n.node_id for n in group)]
            )
        except RedisError as exc:
            raise unavailable(exc) from exc
        node = next((n for n in group if n.node_id == chosen), None)
        return Hold(node, token) if node is not None else None
