"""TURN: coturn's shared-secret credentials, and media relayed by a real coturn between two
network namespaces that cannot exchange UDP directly.

Topology (three namespaces made per run, removed in the fixture's ``finally``)::

    server ns  10.201.1.2 --veth-- 10.201.1.1  router ns  10.201.2.1 --veth-- 10.201.2.2  client ns
    avatar serve :8080 (no TURN)            coturn on 10.201.0.1:3478 (lo)
    avatar serve :8081 (TURN, secret)       iptables: FORWARD drops UDP between the /24s

TCP is forwarded (signalling over HTTP works); UDP between server and client only passes
through coturn's relay address 10.201.0.1, which both reach.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from avatar.errors import ConfigError
from avatar.server.turn import turn_credentials
from tests.timeline import assert_accounted

REPO = Path(__file__).resolve().parents[1]
ROUTER_LO, SERVER_IP, CLIENT_IP = "10.201.0.1", "10.201.1.2", "10.201.2.2"
TURN_URL = f"turn:{ROUTER_LO}:3478?transport=udp"
PLAIN_PORT, TURN_PORT = 8080, 8081  # two servers: without TURN, with TURN from the secret
SECRET = secrets.token_hex(16)
CONNECT_TIMEOUT_S = 10.0
MEDIA_FRAMES = 50  # 2 s of video the client waits for (and as many 20 ms audio packets)


# -- turn_credentials --------------------------------------------------------------------------


def test_turn_credentials_follow_coturn_rest_api() -> None:
    server = turn_credentials("s3cret", ["turn:t.example:3478"], 3600, "alice", 1_700_000_000.7)
    assert server.urls == ["turn:t.example:3478"]
    assert server.username == "1700003600:alice"  # expiry (Unix s) : user
    # printf '1700003600:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
    assert server.credential == "YAFdW/YDZewZsR1QSgUk2IrfbRI="
    assert len(base64.b64decode(server.credential)) == 20  # an HMAC-SHA1 digest


def test_turn_credentials_refuse_what_coturn_could_not_check() -> None:
    with pytest.raises(ConfigError, match="secret"):
        turn_credentials("", ["turn:t.example:3478"], 3600, "alice", 0.0)
    with pytest.raises(ConfigError, match="lifetime"):
        turn_credentials("s", ["turn:t.example:3478"], 0, "alice", 0.0)
    with pytest.raises(ConfigError, match="':'"):
        turn_credentials("s", ["turn:t.example:3478"], 60, "a:b", 0.0)


# -- the namespace lab -------------------------------------------------------------------------


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    tools = ("ip", "iptables", "turnserver", "stdbuf")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: iproute2 iptables coturn coreutils)"
    return None


def _sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class Lab:
    """Three namespaces, coturn in the router, two ``avatar serve`` in the server namespace."""

    prefix: str
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    coturn_log: Path = field(init=False)

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def add_namespace(self, role: str) -> str:
        name = self.ns(role)
        _sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        # IPv4 only: no IPv6 link-local path can stand in for the blocked one
        _sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        return name

    def link(self, router_if: str, router_ip: str, other: str, other_ip: str) -> None:
        """A veth from the router to ``other``'s eth0, on ``other_ip``'s /24, routed via it."""
        router = self.ns("r")
        _sh("ip", "-n", router, "link", "add", router_if, "type", "veth",
            "peer", "name", "eth0", "netns", other)  # fmt: skip
        _sh("ip", "-n", router, "addr", "add", f"{router_ip}/24", "dev", router_if)
        _sh("ip", "-n", router, "link", "set", router_if, "up")
        _sh("ip", "-n", other, "addr", "add", f"{other_ip}/24", "dev", "eth0")
        _sh("ip", "-n", other, "link", "set", "eth0", "up")
        _sh("ip", "-n", other, "route", "add", "default", "via", router_ip)

    def build(self) -> None:
        router, server, client = (self.add_namespace(r) for r in "rsc")
        self.link("srv", "10.201.1.1", server, SERVER_IP)
        self.link("cli", "10.201.2.1", client, CLIENT_IP)
        _sh("ip", "-n", router, "addr", "add", f"{ROUTER_LO}/32", "dev", "lo")
        _sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for src, dst in (("10.201.1.0/24", "10.201.2.0/24"), ("10.201.2.0/24", "10.201.1.0/24")):
            _sh("ip", "netns", "exec", router, "iptables", "-A", "FORWARD", "-p", "udp",
                "-s", src, "-d", dst, "-j", "DROP")  # fmt: skip

    def start(self, role: str, argv: list[str], log: str, env: dict[str, str]) -> Path:
        path = self.tmp / log
        with path.open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        return path

    def wait_for(self, path: Path, pattern: str, timeout_s: float) -> str:
        deadline, text = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace")
            if re.search(pattern, text):
                return text
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"a lab process exited; {path.name}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{path.name}: no {pattern!r} in {timeout_s} s:\n{text[-3000:]}")

    def start_coturn(self) -> Path:
        # -n: no config file (Debian's /etc/turnserver.conf sends the log to syslog); -v logs
        # allocations, permissions, channel binds and per-session byte counts
        argv = ["turnserver", "-n", "-v", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp",
                "--no-tcp-relay", "--listening-ip", ROUTER_LO, "--relay-ip", ROUTER_LO,
                "--listening-port", "3478", "--realm", "avatar.test", "--fingerprint",
                "--use-auth-secret", "--static-auth-secret", SECRET,
                "--userdb", str(self.tmp / "turndb"), "--pidfile", str(self.tmp / "turn.pid"),
                "--log-file", "stdout", "--simple-log"]  # fmt: skip
        # coturn writes its log with stdio: line-buffer it so the test can read it live
        path = self.start("r", ["stdbuf", "-oL", *argv], "coturn.log", dict(os.environ))
        self.wait_for(path, r"UDP listener opened on: 10\.201\.0\.1:3478", 10)
        return path

    def start_server(self, port: int, *, turn: bool) -> Path:
        env = {k: v for k, v in os.environ.items() if k != "AVATAR_TURN_SECRET"}
        argv = [sys.executable, "-m", "avatar.cli", "serve", "--host", SERVER_IP,
                "--port", str(port), "--ice-host", SERVER_IP, "--set", "server.drain_s=0",
                "--set", "server.auth.require_token=never"]  # fmt: skip
        if turn:  # the production path: turn_urls + the secret in the environment
            env["AVATAR_TURN_SECRET"] = SECRET
            argv += ["--set", f"server.turn_urls=['{TURN_URL}']"]
        return self.start("s", argv, f"server-{port}.log", env)

    def client(self, port: int, *extra: str) -> dict[str, Any]:
        """Run tests/turn_client.py in the client namespace; its JSON result."""
        argv = ["ip", "netns", "exec", self.ns("c"), sys.executable, "-m", "tests.turn_client",
                f"http://{SERVER_IP}:{port}", "--frames", str(MEDIA_FRAMES),
                "--connect-timeout", str(CONNECT_TIMEOUT_S), *extra]  # fmt: skip
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 0 and lines, f"client failed:\n{done.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for name in reversed(self.namespaces):  # deleting a namespace removes its veths
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab(f"avt{os.getpid()}{secrets.token_hex(2)}", tmp_path_factory.mktemp("turn"))
    try:
        try:
            lab.build()
        except RuntimeError as e:  # e.g. a container without CAP_SYS_ADMIN / CAP_NET_ADMIN
            pytest.skip(f"cannot build network namespaces here: {e}")
        lab.coturn_log = lab.start_coturn()
        logs = [lab.start_server(PLAIN_PORT, turn=False), lab.start_server(TURN_PORT, turn=True)]
        for log in logs:
            lab.wait_for(log, r"avatar serve: http://", 60)
        yield lab
    finally:
        lab.close()


def relayed_bytes(lab: Lab, user: str, timeout_s: float = 5.0) -> int:
    """Bytes coturn relayed to and from peers for allocations whose user label matches the
    regex ``user`` (logged when they close: a closing peer refreshes them to lifetime 0)."""
    pattern = re.compile(rf"peer usage: realm=<[^>]*>, username=<\d+:{user}>, "
                         r"rp=\d+, rb=(\d+), sp=\d+, sb=(\d+)")  # fmt: skip
    deadline = time.monotonic() + timeout_s
    total = 0
    while time.monotonic() < deadline:
        text = lab.coturn_log.read_text()
        total = sum(int(rb) + int(sb) for rb, sb in pattern.findall(text))
        if total:
            break
        time.sleep(0.2)
    return total


def assert_media(result: dict[str, Any]) -> None:
    assert result["connected"] and result["media"], result  # the frames came (a safety limit)
    video = [(0, pts, None) for pts in result["video_pts"]]
    assert_accounted(video, result["stats"])  # on the grid; each missing frame counted


# -- relaying through coturn -------------------------------------------------------------------


@pytest.mark.slow
def test_without_turn_udp_is_blocked(lab: Lab) -> None:
    """The negative control: same client, same server, no TURN on either side."""
    result = lab.client(PLAIN_PORT)
    assert not result["connected"], result
    assert result["ice_state"] == "checking", result  # the offer/answer went through (TCP)
    assert result["video_frames"] == 0, result


@pytest.mark.slow
def test_client_relays_with_ephemeral_credentials(lab: Lab) -> None:
    """Relay-only client with :func:`turn_credentials` against coturn's use-auth-secret."""
    creds = turn_credentials(SECRET, [TURN_URL], 600, "client", time.time())
    assert creds.username and creds.credential
    result = lab.client(PLAIN_PORT, "--turn", TURN_URL, "--username", creds.username,
                        "--credential", creds.credential, "--relay-only")  # fmt: skip
    assert_media(result)
    assert result["pair"]["local_type"] == "relay", result
    assert result["pair"]["local"].startswith(f"{ROUTER_LO}:"), result
    assert relayed_bytes(lab, "client") > 50_000, "coturn relayed (almost) nothing"


@pytest.mark.slow
def test_server_relays_with_secret_from_environment(lab: Lab) -> None:
    """Server with ``server.turn_urls`` + ``AVATAR_TURN_SECRET``; the client has no TURN."""
    result = lab.client(TURN_PORT)
    assert_media(result)
    assert result["pair"]["remote_type"] == "relay", result
    assert result["pair"]["remote"].startswith(f"{ROUTER_LO}:"), result
    # the server labels its allocations itself: anything but the other test's "client"
    assert relayed_bytes(lab, r"(?!client>)[^>]+") > 50_000, "coturn relayed (almost) nothing"
