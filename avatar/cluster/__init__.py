"""Many machines: engine nodes registered in one Redis, offers placed on them by gateways.

The parts, each in its own file, all on a real Redis (``redis.asyncio``):

- :mod:`~avatar.cluster.keys`: every key the pool uses, under one prefix.
- :mod:`~avatar.cluster.registry`: a node's record (address, pool, avatars, capacity, sessions,
  state, version) and its liveness, a key that expires unless the node refreshes it.
- :mod:`~avatar.cluster.placement`: power of two choices among the live, serving nodes of a pool
  that have the avatar, the slot held atomically by a Redis script so that no number of gateways
  can overfill a node.
- :mod:`~avatar.cluster.records`: each session's life, written once: opened, then closed with a
  reason, in a Redis stream with running counts, so that opened = closed + active can be checked
  at any time; the session -> node map gateways route sockets by; the sweep that closes a dead
  node's sessions as ``node_lost``.

A Redis that does not answer is :class:`ClusterUnavailable` (an HTTP 503 where an offer waits on
it), never a crash: running sessions do not need Redis.
"""

from avatar.cluster.keys import ClusterUnavailable, Keys, connect

__all__ = ["ClusterUnavailable", "Keys", "connect"]
