"""The node pool across hosts: each role in a network namespace of its own, on one bridge.

Topology (made per run, removed in the fixture's ``finally``)::

    bridge br0 in the router ns, 10.204.1.0/24         client ns 10.204.2.2 --veth-- router
      redis 10.204.1.10   gw1 .11   gw2 .12              (routed; the router's iptables drop UDP
      node cpu-1 .21   cpu-2 .22   gpu-1 .23              between the client's /24 and the hosts')
      this test process .254 (a veth from the root ns)   coturn on the router's 10.204.0.1:3478

Every node offers only its own address (ICE), so a session's media goes to the node that holds
it; the client cannot send UDP to any host and gets its media through coturn with the
short-lived credentials the gateway's ``/api/ice`` hands out, as a page behind a UDP-blocking
firewall would (the TURN fallback).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.testing import browser
from avatar.testing.pool_lab import COMMON, ONE_ADDRESS, get, owners, tally, until
from tests.conftest import write_wav
from tests.test_server import speech
from tests.test_turn import _lab_unavailable, _sh

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
NET, CLIENT_NET, TURN_IP = "10.204.1", "10.204.2", "10.204.0.1"
REDIS_IP, HOST_IP, CLIENT_IP = f"{NET}.10", f"{NET}.254", f"{CLIENT_NET}.2"
GATEWAYS = {"gw1": f"{NET}.11", "gw2": f"{NET}.12"}
NODES = {
    "cpu-1": (f"{NET}.21", "cpu"),
    "cpu-2": (f"{NET}.22", "cpu"),
    "gpu-1": (f"{NET}.23", "gpu"),
}
TURN_URL = f"turn:{TURN_IP}:3478?transport=udp"
SECRET = secrets.token_hex(16)


@dataclass
class NetLab:
    prefix: str
    tmp: Path
    namespaces: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    host_if: str = ""

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"[:15]

    def add(self, role: str) -> str:
        name = self.ns(role)
        _sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        return name

    def on_bridge(self, role: str, ip: str) -> None:
        """``role``'s namespace (or the root one, role ""), on the bridge at ``ip``."""
        router, i = self.ns("r"), len(self.namespaces) + (100 if not role else 0)
        br_side = f"b{self.prefix[-4:]}{i}"[:15]
        peer = f"h{self.prefix[-4:]}{i}"[:15] if not role else "eth0"
        where = ["netns", self.ns(role)] if role else []
        _sh("ip", "link", "add", br_side, "netns", router, "type", "veth", "peer", "name", peer,
            *where)  # fmt: skip
        _sh("ip", "-n", router, "link", "set", br_side, "master", "br0", "up")
        at = ["-n", self.ns(role)] if role else []
        _sh("ip", *at, "addr", "add", f"{ip}/24", "dev", peer)
        _sh("ip", *at, "link", "set", peer, "up")
        if role:
            _sh("ip", *at, "route", "add", "default", "via", f"{NET}.1")
        else:
            self.host_if = peer

    def build(self) -> None:
        router = self.add("r")
        _sh("ip", "-n", router, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", router, "addr", "add", f"{NET}.1/24", "dev", "br0")
        _sh("ip", "-n", router, "link", "set", "br0", "up")
        _sh("ip", "-n", router, "addr", "add", f"{TURN_IP}/32", "dev", "lo")
        _sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for role, ip in [("redis", REDIS_IP), *GATEWAYS.items(),
                         *((n, a) for n, (a, _) in NODES.items())]:  # fmt: skip
            self.add(role)
            self.on_bridge(role, ip)
        self.on_bridge("", HOST_IP)
        client = self.add("c")
        _sh("ip", "-n", router, "link", "add", "cli", "type", "veth", "peer", "name", "eth0",
            "netns", client)  # fmt: skip
        _sh("ip", "-n", router, "addr", "add", f"{CLIENT_NET}.1/24", "dev", "cli")
        _sh("ip", "-n", router, "link", "set", "cli", "up")
        _sh("ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        _sh("ip", "-n", client, "link", "set", "eth0", "up")
        _sh("ip", "-n", client, "route", "add", "default", "via", f"{CLIENT_NET}.1")
        for src, dst in (
            (f"{CLIENT_NET}.0/24", f"{NET}.0/24"),
            (f"{NET}.0/24", f"{CLIENT_NET}.0/24"),
        ):
            _sh("ip", "netns", "exec", router, "iptables", "-A", "FORWARD", "-p", "udp",
                "-s", src, "-d", dst, "-j", "DROP")  # fmt: skip

    def start(self, role: str, argv: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.tmp / f"{role}.log"
        with log.open("wb") as out:
            self.procs[role] = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv],
                                                cwd=REPO, env=env, stdout=out,
                                                stderr=subprocess.STDOUT)  # fmt: skip
        return log

    def wait_for(self, log: Path, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{log.name}: no {text!r}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def serve(self, role: str, ip: str, *args: str) -> Path:
        env = {**os.environ, "AVATAR_TURN_SECRET": SECRET}
        return self.start(role, [sys.executable, "-m", "avatar.cli", "serve", "--host", ip,
                                 "--port", "8080", "--ice-host", ip, "--redis",
                                 f"redis://{REDIS_IP}:6379/0", "--set",
                                 f"server.turn_urls=['{TURN_URL}']",
                                 "--set", "server.auth.require_token=never",
                                 *COMMON, *args], env)  # fmt: skip

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait(timeout=10)
        if self.host_if:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = NetLab(f"ap{os.getpid() % 10000}", tmp_path_factory.mktemp("netlab"))
    try:
        try:
            lab.build()
        except RuntimeError as e:
            pytest.skip(f"cannot build network namespaces here: {e}")
        lab.start("r", ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp",
                        "--no-tcp-relay", "--listening-ip", TURN_IP, "--relay-ip", TURN_IP,
                        "--listening-port", "3478", "--realm", "avatar.test", "--fingerprint",
                        "--use-auth-secret", "--static-auth-secret", SECRET,
                        "--userdb", str(lab.tmp / "turndb"), "--log-file", "stdout"])  # fmt: skip
        redis_log = lab.start("redis", ["redis-server", "--bind", REDIS_IP, "--port", "6379",
                                        "--save", "", "--appendonly", "no",
                                        "--protected-mode", "no"])  # fmt: skip
        lab.wait_for(redis_log, "Ready to accept connections", 10)
        logs = [lab.serve(name, ip, "--role", "node", "--pool", pool, "--set",
                          f"server.cluster.node_id={name}", "--set", "server.max_sessions=2")
                for name, (ip, pool) in NODES.items()]  # fmt: skip
        logs += [lab.serve(name, ip, "--role", "gateway", *ONE_ADDRESS)
                 for name, ip in GATEWAYS.items()]  # fmt: skip
        for log in logs:
            lab.wait_for(log, "avatar serve: http://", 120)
        yield lab
    finally:
        lab.close()


def client(lab: NetLab, url: str, *extra: str) -> dict[str, Any]:
    """tests/turn_client.py in the client namespace: one session through ``url``."""
    argv = ["ip", "netns", "exec", lab.ns("c"), sys.executable, "-m", "tests.turn_client", url,
            "--frames", "25", "--connect-timeout", "15", *extra]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=90)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"client failed:\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_across_hosts_a_client_without_udp_to_the_nodes_gets_media_through_coturn(
    lab: NetLab,
) -> None:
    gw1, gw2 = (f"http://{ip}:8080" for ip in GATEWAYS.values())
    redis = f"redis://{REDIS_IP}:6379/0"

    async def ready() -> bool:
        status, body = await get(gw1, "/readyz")
        return status == 200 and body["nodes"] == 3

    assert asyncio.run(until(ready, 30))
    # the page's ICE servers come from the gateway: TURN with short-lived credentials
    status, ice = asyncio.run(get(gw2, "/api/ice"))
    turn = next(s for s in ice["iceServers"] if any(u.startswith("turn:") for u in s["urls"]))
    creds = ["--turn", TURN_URL, "--username", turn["username"], "--credential", turn["credential"]]
    # no TURN in the client: UDP to every host is dropped, so the only pair that works is the
    # node's own relay candidate (nodes gather one from coturn too); a host pair would win if
    # the UDP block leaked
    plain = client(lab, gw1)
    assert status == 200 and plain["connected"] and plain["media"], plain
    assert plain["pair"]["remote_type"] == "relay" and plain["pair"]["remote"].startswith(TURN_IP)
    relayed = [client(lab, gw, *creds, "--relay-only") for gw in (gw1, gw2)]
    for r in relayed:
        assert r["connected"] and r["media"] and r["video_frames"] >= 25, r
        assert r["pair"]["local_type"] == "relay" and r["pair"]["local"].startswith(TURN_IP), r
    cpu_ips = {ip for ip, pool in NODES.values() if pool == "cpu"}
    remotes = {r["pair"]["remote"].split(":")[0] for r in relayed}
    assert remotes <= cpu_ips  # media to the node that holds the session, on its own address
    t = asyncio.run(tally(redis))
    assert t.opened == 3 and t.balanced


@pytest.mark.skipif(not browser.chromium_available(), reason="needs playwright + chromium")
def test_chromium_without_udp_to_the_nodes_roams_when_its_node_drains(
    lab: NetLab, tmp_path: Path
) -> None:
    """The demo page in Chromium in the client namespace, through gateway 1: its ICE servers
    (TURN) come from the gateway's /api/ice, so its media is relayed; its node is told to stop
    and the page moves to the other cpu node and goes on presenting frames."""
    audio = np.concatenate([speech(3.0), np.zeros(48000 * 3, np.float32)])
    mic = write_wav(tmp_path / "mic.wav", audio, 48000)
    gw1 = f"http://{GATEWAYS['gw1']}:8080"
    argv = ["ip", "netns", "exec", lab.ns("c"), sys.executable, "-m", "tests.browser_client",
            gw1, "--mic", str(mic)]  # fmt: skip
    errors = (tmp_path / "browser.log").open("w")
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=errors, text=True)  # fmt: skip

    def step() -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / "browser.log").read_text()[-3000:]
        result: dict[str, Any] = json.loads(line)
        return result

    watchdog = threading.Timer(240, proc.kill)  # a safety limit: the page never hangs the run
    watchdog.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        first = step()
        (node,) = asyncio.run(owners(f"redis://{REDIS_IP}:6379/0", [first["session"]]))
        assert node in NODES and NODES[node][1] == "cpu", first
        lab.procs[node].send_signal(signal.SIGTERM)  # drain: the page is told to move
        proc.stdin.write("go\n")
        proc.stdin.flush()
        second = step()
        (now_on,) = asyncio.run(owners(f"redis://{REDIS_IP}:6379/0", [second["move"]["to"]]))
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=10)
        errors.close()
    for seen in (first, second):  # the client's UDP reaches no host: relayed through coturn
        assert "relay" in (seen["pair"]["local"], seen["pair"]["remote"]), seen
    assert second["move"]["reason"] == "told" and second["move"]["from"] == first["session"]
    assert now_on is not None and now_on != node and NODES[now_on][1] == "cpu"
