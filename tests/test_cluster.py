"""The pool's registry, placement and session records on a real ``redis-server``.

Two gateways are two clients of their own; nodes are records written as a node writes them.
Behaviour only: who is placed, how many, what is recorded (times are safety limits)."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from avatar.cluster import ClusterUnavailable, Keys, connect
from avatar.cluster.placement import Placer
from avatar.cluster.records import SessionLog
from avatar.cluster.registry import NodeInfo, NodeRegistry
from avatar.testing.services import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
T = TypeVar("T")
# a throwaway self-signed certificate: the in-cluster set-up only loads it as the API's CA
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUWjcC4/aeUQYGfKwx3A16AnR5YuowCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAeFw0yNjEyMDcwODExMzRaFw0zNjEyMDQwODEx
MzRaMBIxEDAOBgNVBAMMB3Rlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASceipfsGaW6nVAXJA+cFlFpB1f09eaJ4q0n4dwdtSNd73mvkVhb5F/eh9Ge7b4
EOIWCtigTNIpUOPxV3cKN3cYo1MwUTAdBgNVHQ4EFgQU+yaVd+YtI/IT2aHyDRBb
dVFqYBYwHwYDVR0jBBgwFoAU+yaVd+YtI/IT2aHyDRBbdVFqYBYwDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA3RnEMlbDZerYeP+A7yTa5dbrlpyv
T1+DErmg9lNWEDgCIHx3sV+wQ0m51l/9J4ghpuYjVWtgs3ohY4ewCUKMi3cI
-----END CERTIFICATE-----
"""


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def keys(request: pytest.FixtureRequest) -> Keys:
    return Keys(f"t{abs(hash(request.node.name)) % 10**8}:")  # each test its own pool


class Gateway:
    """What a gateway holds: its own Redis client, the registry, a placer, the session log."""

    def __init__(self, url: str, keys: Keys, alive_s: float = 3.0, hold_s: float = 10.0,
                 seed: int = 0) -> None:  # fmt: skip
        self.redis = connect(url)
        self.registry = NodeRegistry(self.redis, keys, alive_s)
        self.placer = Placer(self.redis, keys, self.registry, hold_s, random.Random(seed))
        self.log = SessionLog(self.redis, keys)

    async def close(self) -> None:
        await self.redis.aclose()


def node(i: int, pool: str = "cpu", capacity: int = 8, avatars: tuple[str, ...] = ("default",),
         sessions: int = 0) -> NodeInfo:  # fmt: skip
    return NodeInfo(f"n{i}", f"http://10.0.0.{i}:8080", pool, avatars, capacity, sessions)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def test_only_live_serving_nodes_of_the_pool_with_the_avatar_are_candidates(
    redis: RedisServer, keys: Keys
) -> None:
    async def go() -> dict[str, list[str]]:
        g = Gateway(redis.url, keys, alive_s=0.6)
        seen: dict[str, list[str]] = {}
        try:
            for info in (node(1), node(2, avatars=("carphone",)), node(3, pool="gpu")):
                await g.registry.publish(info)

            async def ids(pool: str = "cpu", avatar: str = "default") -> list[str]:
                return [n.node_id for n in await g.registry.candidates(pool, avatar)]

            seen["cpu"], seen["gpu"], seen["carphone"] = (
                await ids(),
                await ids("gpu"),
                await ids(avatar="carphone"),
            )
            await g.registry.publish(node(4))
            await g.registry.publish(replace(node(1), state="draining"))
            seen["drain"] = await ids()
            deadline = time.monotonic() + 5  # n1..n3 stop refreshing; n4 keeps on
            while time.monotonic() < deadline and len(await ids()) + len(await ids("gpu")) > 1:
                await g.registry.publish(node(4))
                await asyncio.sleep(0.2)
            seen["later"] = await ids() + await ids("gpu")
            seen["registered"] = [n.node_id for n, alive in await g.registry.nodes() if not alive]
            hold = await g.placer.place("gpu", "default")
            seen["gpu_hold"] = [hold.node.node_id] if hold else []
        finally:
            await g.close()
        return seen

    seen = run(go)
    assert seen["cpu"] == ["n1"] and seen["gpu"] == ["n3"] and seen["carphone"] == ["n2"]
    assert seen["drain"] == ["n4"]  # a draining node is alive but never placed on
    assert seen["later"] == ["n4"]  # the silent ones left placement...
    assert seen["registered"] == ["n1", "n2", "n3"]  # ...and stay registered until swept
    assert seen["gpu_hold"] == []  # no live gpu node: no placement


def test_two_gateways_racing_never_overfill_a_node(redis: RedisServer, keys: Keys) -> None:
    """50 offers at once through 2 gateways to 3 nodes x 8 slots: exactly 24 holds."""

    async def go() -> tuple[int, Counter[str], list[int]]:
        a, b = Gateway(redis.url, keys, seed=1), Gateway(redis.url, keys, seed=2)
        try:
            for i in (1, 2, 3):
                await a.registry.publish(node(i))
            holds = await asyncio.gather(
                *((a if k % 2 else b).placer.place("cpu", "default") for k in range(50))
            )
            per_node = Counter(h.node.node_id for h in holds if h is not None)
            in_redis = [await a.redis.zcard(keys.holds(f"n{i}")) for i in (1, 2, 3)]
        finally:
            await a.close()
            await b.close()
        return sum(h is not None for h in holds), per_node, in_redis

    accepted, per_node, in_redis = run(go)
    assert accepted == 24
    assert per_node == {"n1": 8, "n2": 8, "n3": 8} and in_redis == [8, 8, 8]


def test_sequential_sessions_spread_evenly_and_holds_end(redis: RedisServer, keys: Keys) -> None:
    async def go() -> tuple[list[int], str | None, str | None]:
        g = Gateway(redis.url, keys, hold_s=0.4, seed=3)
        try:
            nodes = {i: node(i) for i in (1, 2, 3)}
            for info in nodes.values():
                await g.registry.publish(info)
            for _ in range(24):  # the node counts the session, then the gateway releases
                hold = await g.placer.place("cpu", "default")
                assert hold is not None
                i = int(hold.node.node_id[1:])
                nodes[i] = replace(nodes[i], sessions=nodes[i].sessions + 1)
                await g.registry.add_sessions(hold.node.node_id, 1)
                await g.placer.release(hold)
            counts = [nodes[i].sessions for i in (1, 2, 3)]
            full = await g.placer.place("cpu", "default")
            await g.registry.add_sessions("n1", -1)  # one left n1; an unreleased hold takes it
            held = await g.placer.place("cpu", "default")
            blocked = await g.placer.place("cpu", "default")
            await asyncio.sleep(0.6)  # the hold expires by itself (a gateway died)
            again = await g.placer.place("cpu", "default")
        finally:
            await g.close()
        assert full is None and held is not None and blocked is None
        return counts, held.node.node_id, again.node.node_id if again else None

    counts, held, again = run(go)
    assert sum(counts) == 24 and max(counts) - min(counts) <= 2
    assert held == again == "n1"


def test_an_offer_refused_by_a_node_goes_to_the_next(redis: RedisServer, keys: Keys) -> None:
    async def go() -> list[str | None]:
        g = Gateway(redis.url, keys)
        try:
            for i in (1, 2):
                await g.registry.publish(node(i))
            first = await g.placer.place("cpu", "default")
            assert first is not None
            other = await g.placer.place("cpu", "default", exclude=frozenset({first.node.node_id}))
            none = await g.placer.place("cpu", "default", exclude=frozenset({"n1", "n2"}))
        finally:
            await g.close()
        return [first.node.node_id, other.node.node_id if other else None,
                none.node.node_id if none else None]  # fmt: skip

    first, other, none = run(go)
    assert {first, other} == {"n1", "n2"} and none is None


def test_each_session_is_recorded_once_and_the_counts_balance(
    redis: RedisServer, keys: Keys
) -> None:
    async def go() -> dict[str, object]:
        g = Gateway(redis.url, keys)
        seen: dict[str, object] = {}
        try:
            await g.registry.publish(node(1))
            for sid in ("s1", "s2", "s3"):
                await g.log.opened(sid, "n1")
            seen["owner"] = await g.log.owner("s2")
            seen["open"] = await g.log.tally()
            seen["first"] = await g.log.closed("s1", "n1", "client_left")
            seen["second"] = await g.log.closed("s1", "n1", "reaped")  # already recorded
            seen["after"] = await g.log.tally()
            seen["gone"] = await g.log.owner("s1")
            with pytest.raises(ValueError, match="close reason"):
                await g.log.closed("s2", "n1", "because")
            events = await g.redis.xrange(keys.log)
            seen["events"] = [(e["event"], e["session"], e.get("reason")) for _, e in events]
        finally:
            await g.close()
        return seen

    seen = run(go)
    assert seen["owner"] == "n1" and seen["gone"] is None
    open_, after = seen["open"], seen["after"]
    assert open_ == _tally(3, {}, 3) and after == _tally(3, {"client_left": 1}, 2)
    assert seen["first"] is True and seen["second"] is False
    assert seen["events"] == [("opened", "s1", None), ("opened", "s2", None),
                              ("opened", "s3", None), ("closed", "s1", "client_left")]  # fmt: skip


def _tally(opened: int, closed: dict[str, int], active: int) -> object:
    from avatar.cluster.records import Tally

    t = Tally(opened, closed, active)
    assert t.balanced
    return t


def test_one_sweeper_closes_a_dead_nodes_sessions_as_node_lost(
    redis: RedisServer, keys: Keys
) -> None:
    async def go() -> dict[str, object]:
        a, b = Gateway(redis.url, keys, alive_s=0.5), Gateway(redis.url, keys, alive_s=0.5)
        seen: dict[str, object] = {}
        try:
            await a.registry.publish(node(1))
            await a.registry.publish(node(2))
            for sid, n in (("s1", "n1"), ("s2", "n1"), ("s3", "n2")):
                await a.log.opened(sid, n)
            await a.log.closed("s2", "n1", "client_left")
            seen["alive_sweep"] = await a.log.sweep("gw-a", 5)  # both alive: nothing
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and await a.redis.exists(keys.alive("n1")):
                await a.registry.publish(node(2))  # n2 lives on, n1 went silent
                await asyncio.sleep(0.1)
            seen["b"] = await b.log.sweep("gw-b", 5)  # a holds the lease
            seen["a"] = await a.log.sweep("gw-a", 5)
            seen["tally"] = await a.log.tally()
            seen["nodes"] = [n.node_id for n, _ in await a.registry.nodes()]
            seen["owner"] = await a.log.owner("s1")
        finally:
            await a.close()
            await b.close()
        return seen

    seen = run(go)
    assert seen["alive_sweep"] == [] and seen["b"] == [] and seen["a"] == ["n1"]
    assert seen["tally"] == _tally(3, {"client_left": 1, "node_lost": 1}, 1)
    assert seen["nodes"] == ["n2"] and seen["owner"] is None


def test_a_redis_outage_is_a_clear_error_and_placement_resumes(tmp_path: Path, keys: Keys) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()

    async def go() -> tuple[str, str | None]:
        g = Gateway(server.url, keys)
        try:
            await g.registry.publish(node(1))
            server.kill()
            with pytest.raises(ClusterUnavailable, match="did not answer") as err:
                await g.placer.place("cpu", "default")
            server.start()  # the same port and append-only file: the records are back
            await g.registry.publish(node(1))  # the node's next heartbeat
            hold = await g.placer.place("cpu", "default")
        finally:
            await g.close()
        return str(err.value), hold.node.node_id if hold else None

    try:
        why, placed = run(go)
    finally:
        server.kill()
    assert "Redis" in why and placed == "n1"


def test_a_node_pod_keeps_its_deletion_cost_at_its_session_count(tmp_path: Path) -> None:
    """No Kubernetes API server runs here: an HTTP server stands in for it and checks what the
    API would be sent; the in-cluster set-up is read from a service-account folder."""
    from aiohttp import web

    from avatar.cluster.deletion_cost import ANNOTATION, PodDeletionCost

    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("tok\n")
    (account / "namespace").write_text("avatar\n")
    (account / "ca.crt").write_text(CA_PEM)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "POD_NAME": "avatar-node-cpu-abc"}
    made = PodDeletionCost.in_cluster(env, account)
    assert made is not None
    assert made.url == "https://10.96.0.1:443/api/v1/namespaces/avatar/pods/avatar-node-cpu-abc"
    assert PodDeletionCost.in_cluster({}, account) is None  # not in a pod: nothing to do

    async def go() -> list[tuple[str, str, str, Any]]:
        seen: list[tuple[str, str, str, Any]] = []
        refuse = {"on": False}

        async def patch(request: web.Request) -> web.Response:
            seen.append((request.method, request.path, request.headers["Authorization"],
                         (request.content_type, await request.json())))  # fmt: skip
            return web.json_response({}, status=403 if refuse["on"] else 200)

        app = web.Application()
        app.router.add_patch("/api/v1/namespaces/{ns}/pods/{pod}", patch)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        cost = PodDeletionCost(f"http://127.0.0.1:{port}", "avatar", "pod-1", "tok")
        for n in (3, 3, 4):  # the second 3 sends nothing
            await cost.set(n)
        refuse["on"] = True
        await cost.set(0)  # refused (RBAC): logged, no exception, tried again next time
        refuse["on"] = False
        await cost.set(0)
        await runner.cleanup()
        return seen

    seen = asyncio.run(go())
    assert [s[3][1]["metadata"]["annotations"][ANNOTATION] for s in seen] == ["3", "4", "0", "0"]
    method, path, auth, (ctype, _) = seen[0]
    assert (method, path, auth) == ("PATCH", "/api/v1/namespaces/avatar/pods/pod-1", "Bearer tok")
    assert ctype == "application/merge-patch+json"
