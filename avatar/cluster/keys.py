"""The pool's Redis keys, under one prefix (``server.cluster.prefix``), and the connection.

============================  ========  =====================================================
key                           type      what
============================  ========  =====================================================
``nodes``                     set       every node id registered and not yet swept
``node:{id}``                 hash      the node's record (:class:`~.registry.NodeInfo`)
``alive:{id}``                string    the node's state (serving, draining); expires unless
                                        refreshed: a node without it is dead
``holds:{id}``                zset      gateways' slot holds on the node, scored by expiry (ms)
``node-sessions:{id}``        set       the node's open sessions (the sweep closes them)
``sessions``                  hash      session id -> node id (where its sockets go)
``closed:{sid}``              string    the session's close was recorded (written once)
``log``                       stream    opened / closed events, with reasons
``counts``                    hash      opened, and closed per reason
``sweeper``                   string    the lease of the one gateway that sweeps dead nodes
============================  ========  =====================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from avatar.errors import AvatarError

T = TypeVar("T")
TIMEOUT_S = 2.0  # a Redis that does not answer within this is unavailable


class ClusterUnavailable(AvatarError):
    """Redis did not answer: no placement now (running sessions go on without it)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under ``prefix``."""

    prefix: str = "avatar:"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def alive(self, node_id: str) -> str:
        return f"{self.prefix}alive:{node_id}"

    def holds(self, node_id: str) -> str:
        return f"{self.prefix}holds:{node_id}"

    def node_sessions(self, node_id: str) -> str:
        return f"{self.prefix}node-sessions:{node_id}"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}sessions"

    def closed(self, sid: str) -> str:
        return f"{self.prefix}closed:{sid}"

    @property
    def log(self) -> str:
        return f"{self.prefix}log"

    @property
    def counts(self) -> str:
        return f"{self.prefix}counts"

    @property
    def sweeper(self) -> str:
        return f"{self.prefix}sweeper"


def connect(url: str) -> aioredis.Redis:
    """A client of ``url`` that answers in strings and gives up after :data:`TIMEOUT_S`."""
    return aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=TIMEOUT_S,
                                   socket_connect_timeout=TIMEOUT_S)  # fmt: skip


def unavailable(exc: RedisError) -> ClusterUnavailable:
    """The one error a caller sees when Redis fails."""
    return ClusterUnavailable(f"the pool's Redis did not answer: {exc}")


async def reply(value: Awaitable[T] | T) -> T:
    """A command's reply: redis-py types its commands for both clients (a reply, or an
    awaitable of it); the asyncio client's are awaitable."""
    return cast(T, await value) if inspect.isawaitable(value) else value
