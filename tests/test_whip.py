"""WHIP and WHEP: the protocol's HTTP rules in one process, then real media with GStreamer.

The GStreamer part is an independent WebRTC stack (webrtcbin: an RSA DTLS certificate, libnice,
trickle ICE over PATCH), run by Debian's Python as ``avatar/testing/gst_whip.py`` in a network
namespace of its own with ``avatar serve`` (so ICE stays on the namespace's own address); this
process reaches the server over a veth for the HTTP checks. One publisher sends speech and three
tone bursts over WHIP; one WHEP player records what it would present, a second one watches for two
seconds; the A/V offset of each burst is measured on the player's presentation times with the same
onset pairing as ``scripts/measure_session.py`` (``scripts/session_metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from avatar.audio.io import load_audio
from avatar.config import IceServer
from avatar.data.tts import write_wave
from avatar.errors import RequestError
from avatar.server.auth import mint_token
from avatar.server.negotiate import drop_redundant_candidates
from avatar.server.sdpfrag import check_if_match, ice_server_links, parse_sdpfrag
from avatar.server.turn import turn_credentials
from tests.test_server import running_server
from tests.timeline import wait_until

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "avatar" / "testing" / "gst_whip.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with GStreamer's bindings (not the venv's)
RATE, FRAME_MS = 48000, 40.0
SECRET = "whip-test-secret-0123456789abcdef"
ELEMENTS = ("webrtcbin", "nicesrc", "opusenc", "opusdec", "vp8dec", "rtpopuspay", "clocksync")
BURSTS = 3

# -- the HTTP side, without media ----------------------------------------------------------------

FRAGMENT = """a=ice-ufrag:EsAw\r
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r
a=group:BUNDLE 0 1\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw\r
a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0\r
a=end-of-candidates\r
"""


def test_trickle_fragments_parse_as_rfc_8840_writes_them() -> None:
    frag = parse_sdpfrag(FRAGMENT, 64)  # the WHEP draft's example, shortened
    assert (frag.ufrag, frag.pwd, frag.end) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1", True)
    assert [(c.mid, c.index) for c in frag.candidates] == [("0", 0), ("0", 0)]
    assert frag.candidates[0].text.startswith("candidate:1387637174 1 udp")
    for bad, why in (("oops", "line"), ("m=audio nine", "media line"), ("a=x\x01", "control"),
                     ("a=ice-ufrag:a\na=ice-ufrag:b", "two different")):  # fmt: skip
        with pytest.raises(RequestError, match=why) as err:
            parse_sdpfrag(bad, 64)
        assert err.value.status == 400
    with pytest.raises(RequestError, match="at most 1"):
        parse_sdpfrag(FRAGMENT, 1)


def test_if_match_follows_rfc_9110_as_whip_uses_it() -> None:
    etag = '"abc"'
    for ok in ('"abc"', "*", '"x", "abc"'):
        check_if_match(ok, etag)
    for header, status in ((None, 428), ('"x"', 412), ('W/"abc"', 412), ("", 412)):
        with pytest.raises(RequestError) as err:
            check_if_match(header, etag)
        assert err.value.status == status


def test_ice_servers_become_link_headers_with_their_credentials() -> None:
    turn = turn_credentials("s3cret", ["turn:t.example:3478?transport=udp"], 600, "whip", 1e9)
    links = ice_server_links([IceServer(urls=["stun:s.example:3478"]), turn])
    assert links[0] == '<stun:s.example:3478>; rel="ice-server"'
    assert links[1] == (f'<turn:t.example:3478?transport=udp>; rel="ice-server"; username='
                        f'"{turn.username}"; credential="{turn.credential}"; '
                        'credential-type="password"')  # fmt: skip
    quoted = ice_server_links([IceServer(urls=["turn:x"], username='a"b', credential="c\\d")])
    assert 'username="a\\"b"; credential="c\\\\d"' in quoted[0]


def test_server_reflexive_candidates_at_their_own_base_are_left_out() -> None:
    host = "a=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\n"
    same = "a=candidate:2 1 udp 1694498815 10.0.0.2 5000 typ srflx raddr 10.0.0.2 rport 5000\r\n"
    nat = "a=candidate:3 1 udp 1694498815 203.0.113.9 5000 typ srflx raddr 10.0.0.2 rport 5000\r\n"
    assert drop_redundant_candidates(host + same + nat) == host + nat


async def _offer(**directions: str) -> tuple[RTCPeerConnection, str]:
    """An aiortc peer's offer with these transceivers (kind=direction), every candidate in it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, direction in directions.items():
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _offer_text(**directions: str) -> str:
    pc, sdp = await _offer(**directions)
    await pc.close()
    return sdp


def _fragment_of(sdp: str, ufrag: str | None = None) -> str:
    lines = sdp.replace("\r\n", "\n").split("\n")
    mine = [x for x in lines if x.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    if ufrag:
        mine[0] = f"a=ice-ufrag:{ufrag}"
    cands = [x for x in lines if x.startswith("a=candidate:")][:1]
    mid = next(x for x in lines if x.startswith("a=mid:"))
    return "\r\n".join([*mine, "m=audio 9 UDP/TLS/RTP/SAVPF 111", mid, *cands]) + "\r\n"


@pytest.mark.slow
def test_whip_and_whep_resources_follow_the_rfc_in_one_process() -> None:
    """Statuses and headers of every WHIP/WHEP request, against the real server and real aiortc
    offers (nothing connects: the rules are about resources, not media)."""

    async def run() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with running_server("render.size=256") as (url, server), aiohttp.ClientSession() as h:
            sdp_h = {"Content-Type": "application/sdp"}
            pub, offer = await _offer(audio="sendonly", video="sendonly")
            viewers = [await _offer(audio="recvonly", video="recvonly") for _ in range(3)]
            _, deaf = await _offer(audio="recvonly", video="recvonly")

            async def call(method: str, path: str, body: str = "", **headers: str) -> Any:
                async with h.request(method, url + path, data=body.encode(),
                                     headers=headers) as r:  # fmt: skip
                    return r.status, r.headers.copy(), await r.text()

            seen["json"] = await call("POST", "/whip", offer, **{"Content-Type": "text/plain"})
            seen["garbage"] = await call("POST", "/whip", "v=0\r\nhello", **sdp_h)
            seen["deaf"] = await call("POST", "/whip", deaf, **sdp_h)  # it sends no audio
            seen["created"] = _, headers, answer = await call("POST", "/whip", offer, **sdp_h)
            loc, etag = headers["Location"], headers["ETag"]
            seen["inactive_video"] = "a=inactive" in answer.split("m=video")[1]
            seen["sessions_open"] = len(server.sessions)
            frag = _fragment_of(offer)
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
            seen["no_if_match"] = await call("PATCH", loc, frag, **trickle)
            seen["stale"] = await call("PATCH", loc, frag, **trickle, **{"If-Match": '"old"'})
            seen["patch_type"] = await call("PATCH", loc, frag, **{"If-Match": etag})
            bad = frag.replace(" udp ", " sctp ")
            seen["bad_cand"] = await call("PATCH", loc, bad, **trickle, **{"If-Match": etag})
            restart = _fragment_of(offer, ufrag="other")
            seen["restart"] = await call("PATCH", loc, restart, **trickle, **{"If-Match": etag})
            seen["trickled"] = await call("PATCH", loc, frag, **trickle, **{"If-Match": etag})
            seen["get"] = await call("GET", loc)
            seen["options"] = await call("OPTIONS", "/whip")
            rid = loc.rsplit("/", 1)[1]
            seen["whep"] = [await call("POST", f"/whep/{rid}", v, **sdp_h) for _, v in viewers]
            seen["whep_unknown"] = await call("POST", f"/whep/{rid[:-1]}x", viewers[0][1], **sdp_h)
            seen["unknown"] = await call("PATCH", f"/whip/{rid}x", frag, **trickle)
            viewer_loc = seen["whep"][0][1]["Location"]
            seen["viewer_delete"] = [await call("DELETE", viewer_loc) for _ in range(2)]
            seen["delete"] = [await call("DELETE", loc) for _ in range(2)]
            seen["viewer_after"] = await call("GET", seen["whep"][1][1]["Location"])
            seen["sessions_left"] = len(server.sessions)
            # the relay's readers of the session's tracks end with it (the tracks wake them)
            seen["relay_readers_left"] = await wait_until(lambda: not _relay_readers(), 5.0)
            for pc in [pub] + [v for v, _ in viewers]:
                await pc.close()
        return seen

    seen = asyncio.run(run())
    assert seen["json"][0] == 415 and "application/sdp" in seen["json"][2]
    assert seen["garbage"][0] == 400 and "malformed SDP" in seen["garbage"][2]
    assert seen["deaf"][0] == 400 and "must send audio" in seen["deaf"][2]
    status, headers, answer = seen["created"]
    assert status == 201 and headers["Content-Type"] == "application/sdp"
    assert answer.startswith("v=0") and seen["inactive_video"]  # its camera is declined
    assert headers["Location"].startswith("/whip/") and headers["ETag"].startswith('"')
    assert seen["sessions_open"] == 1
    patches = ("no_if_match", "stale", "patch_type", "bad_cand", "restart", "trickled", "get")
    assert [seen[k][0] for k in patches] == [428, 412, 415, 400, 422, 204, 204]
    assert seen["trickled"][2] == "" and "ETag" not in seen["trickled"][1]
    assert seen["options"][1]["Accept-Post"] == "application/sdp"
    assert [s for s, _, _ in seen["whep"]] == [201, 201, 409]  # server.limits.whep_viewers: 2
    whep = headers["Location"].replace("/whip/", "/whep/") + "/"
    assert seen["whep"][0][1]["Location"].startswith(whep)
    assert seen["whep_unknown"][0] == 404 and seen["unknown"][0] == 404
    assert [s for s, _, _ in seen["viewer_delete"]] == [200, 404]
    assert [s for s, _, _ in seen["delete"]] == [200, 404]
    assert seen["viewer_after"][0] == 404  # the session's other viewer ended with it
    assert seen["sessions_left"] == 0 and seen["relay_readers_left"]


def _relay_readers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "run_track" in repr(t.get_coro())]


# -- real media: GStreamer in a network namespace -------------------------------------------------


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None or not Path(SYSTEM_PYTHON).exists():
        return "needs iproute2 and Debian's python3"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', "
             "'1.0'); from gi.repository import Gst; Gst.init(None); "
             f"print(*(e for e in {ELEMENTS!r} if not Gst.ElementFactory.find(e)))")  # fmt: skip
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 or done.stdout.strip():
        return ("GStreamer's webrtcbin from Python is missing (scripts/setup_system.sh): "
                f"{(done.stdout + done.stderr).strip()[-200:]}")  # fmt: skip
    return None


def _sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


class Client:
    """gst_whip.py in the namespace; its JSON events read by a thread as they come."""

    def __init__(self, ns: str, *args: str) -> None:
        argv = ["ip", "netns", "exec", ns, SYSTEM_PYTHON, str(CLIENT), *args, "--limit", "60"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            with contextlib.suppress(ValueError):  # GLib's own messages may cut into a line
                self.events.put(json.loads(line))

    def wait_for(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The next event called ``name`` (a safety limit, not a timing assertion)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event["event"] == name:
                return event
            if event["event"] == "failed":
                break
        raise AssertionError(f"no {name!r} event:\n{''.join(self.log)[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclass
class Lab:
    """A namespace with ``avatar serve`` (tokens required) and a STUN server, a veth to it."""

    tmp: Path
    ns: str = field(default_factory=lambda: f"avwhip{os.getpid() % 100000}")
    net: int = field(default_factory=lambda: 100 + os.getpid() % 150)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return f"10.203.{self.net}.2"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:8090"

    def build(self) -> None:
        host_if = f"w{self.ns}"[:15]
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        _sh("ip", "addr", "add", f"10.203.{self.net}.1/24", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        _sh("ip", "-n", self.ns, "link", "set", "eth0", "up")

    def start(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> Path:
        path = self.tmp / log
        argv = ["ip", "netns", "exec", self.ns, *argv]
        with path.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return path

    def serve(self) -> None:
        self.start(["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
                    "--listening-ip", self.ip, "--listening-port", "3478",
                    "--log-file", "stdout"], "stun.log")  # fmt: skip
        env = {**os.environ, "AVATAR_SECRET": SECRET}
        log = self.start([sys.executable, "-m", "avatar.cli", "serve", "--host", self.ip,
                          "--port", "8090", "--ice-host", self.ip, "--set", "server.drain_s=0",
                          "--set", "engine.sync_marker=true", "--set",
                          f"server.ice_servers=[{{urls: ['stun:{self.ip}:3478']}}]"],
                         "server.log", env)  # fmt: skip
        deadline = time.monotonic() + 60
        while "avatar serve:" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)


def http(method: str, url: str, body: str = "", **headers: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body.encode() or None, method=method,
                                 headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def probe_audio(path: Path) -> float:
    """1 s of silence, 3 s of the bundled speech, then three 80 ms 1 kHz tone bursts each after
    0.96 s of silence (the bursts of ``scripts/session_metrics.py``): its length in seconds."""
    speech = load_audio(REPO / "avatar" / "assets" / "sample.ogg", RATE)[: 3 * RATE]
    t = np.arange(round(0.08 * RATE)) / RATE
    burst = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    gap = np.zeros(round(0.96 * RATE), np.float32)
    audio = np.concatenate([np.zeros(RATE, np.float32), speech, *[gap, burst] * BURSTS, gap])
    write_wave(path, audio, RATE)
    return len(audio) / RATE


@dataclass
class Run:
    """What one publisher and two players saw, and the HTTP checks made meanwhile."""

    publisher: dict[str, dict[str, Any]]
    player: dict[str, dict[str, Any]]
    second: dict[str, dict[str, Any]]
    checks: dict[str, int]
    sessions: list[int]  # /healthz while publishing, then after the DELETE
    record: dict[str, Any]
    audio: np.ndarray
    ip: str  # the server's


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("whip")
    lab = Lab(tmp)
    try:
        lab.build()
        lab.serve()
        yield _publish_and_play(lab, tmp)
    finally:
        lab.close()


def _publish_and_play(lab: Lab, tmp: Path) -> Run:
    token = mint_token(SECRET.encode(), 300, time.time(), "whip-test")
    seconds = probe_audio(tmp / "probe.wav")
    pub = Client(lab.ns, "publish", f"{lab.url}/whip", "--file", str(tmp / "probe.wav"),
                 "--token", token, "--wait-stdin")  # fmt: skip
    clients = [pub]
    try:
        created = pub.wait_for("created")
        rid = created["location"].rsplit("/", 1)[1]
        (tmp / "rec").mkdir()
        player = Client(lab.ns, "play", f"{lab.url}/whep/{rid}", "--token", token, "--seconds",
                        f"{seconds + 1:.1f}", "--record", str(tmp / "rec"))  # fmt: skip
        clients.append(player)
        played = {"created": player.wait_for("created")}
        second = Client(lab.ns, "play", f"{lab.url}/whep/{rid}", "--token", token,
                        "--seconds", "2")  # fmt: skip
        clients.append(second)
        seen = {"pub_created": created, "pub_connected": pub.wait_for("connected")}
        seen2 = {"created": second.wait_for("created")}
        checks = _http_checks(lab, token, rid, created["location"])  # two viewers attached
        seen2["done"] = second.wait_for("done")
        sessions = [json.loads(http("GET", f"{lab.url}/healthz")[1])["sessions"]]
        played |= {k: player.wait_for(k) for k in ("first_frame", "done")}
        seen["sent"] = pub.wait_for("sent")
        assert pub.proc.stdin is not None
        pub.proc.stdin.write("delete\n")
        pub.proc.stdin.flush()
        seen["deleting"] = pub.wait_for("deleting")
        sessions.append(json.loads(http("GET", f"{lab.url}/healthz")[1])["sessions"])
        record = json.loads((tmp / "rec" / "record.json").read_text())
        audio = np.fromfile(tmp / "rec" / "audio.f32", np.float32)
        return Run(seen, played, seen2, checks, sessions, record, audio, lab.ip)
    finally:
        for c in clients:
            c.stop()


def _http_checks(lab: Lab, token: str, rid: str, location: str) -> dict[str, int]:
    """Refusals of the real process, while the session and its players are up."""
    auth = {"Authorization": f"Bearer {token}"}
    sdp = {**auth, "Content-Type": "application/sdp"}
    trickle = {**auth, "Content-Type": "application/trickle-ice-sdpfrag"}
    url, frag = lab.url, "a=end-of-candidates\r\n"
    viewer = asyncio.run(_offer_text(audio="recvonly", video="recvonly"))
    return {
        "no_token": http("POST", f"{url}/whip", "v=0", **{"Content-Type": "application/sdp"})[0],
        "wrong_type": http("POST", f"{url}/whip", "v=0", **auth, **{"Content-Type": "text/x"})[0],
        "malformed": http("POST", f"{url}/whip", "v=0\r\nm=x", **sdp)[0],
        "no_if_match": http("PATCH", url + location, frag, **trickle)[0],
        "bad_if_match": http("PATCH", url + location, frag, **trickle, **{"If-Match": '"x"'})[0],
        "unknown_whip": http("DELETE", f"{url}/whip/{rid}x", **auth)[0],
        "unknown_whep": http("POST", f"{url}/whep/x{rid}", viewer, **sdp)[0],
        "third_viewer": http("POST", f"{url}/whep/{rid}", viewer, **sdp)[0],
    }


@pytest.mark.slow
def test_whip_answers_with_the_headers_rfc_9725_asks_for(run: Run) -> None:
    created = run.publisher["pub_created"]
    assert created["status"] == 201 and created["content_type"] == "application/sdp"
    assert created["location"].startswith("/whip/") and created["location"].count("/") == 2
    assert created["etag"].startswith('"') and created["etag"].endswith('"')
    assert created["links"] == [f'<stun:{run.ip}:3478>; rel="ice-server"']
    viewer = run.player["created"]
    assert viewer["status"] == 201 and viewer["content_type"] == "application/sdp"
    assert viewer["location"].startswith(created["location"].replace("/whip/", "/whep/") + "/")
    assert viewer["etag"] and viewer["etag"] != created["etag"]


@pytest.mark.slow
def test_the_publisher_trickles_its_candidates_with_patch(run: Run) -> None:
    patches = run.publisher["deleting"]["patches"]
    # its offer had no candidate: every one (and the end of them) came in a PATCH, each taken
    assert len(patches) >= 2 and set(patches) == {204}


@pytest.mark.slow
def test_the_avatar_speaks_the_published_audio_in_sync_within_a_frame(run: Run) -> None:
    offsets = av_offsets_ms(run.record, run.audio)
    whip, whep, first = (run.publisher["pub_created"]["ms"], run.player["created"]["ms"],
                         run.player["done"]["first_frame_ms"])  # fmt: skip
    print(f"A/V offsets {offsets} ms; POST->201 WHIP {whip} ms, WHEP {whep} ms; first frame "
          f"{first} ms after the WHEP POST")  # fmt: skip
    assert len(offsets) == BURSTS, offsets  # each burst heard and its marker seen
    # The marked frame is the one whose 40 ms hold the onset, so a burst reads -40..0 ms by
    # itself; rtpbin re-maps each stream at every RTCP sender report, and aiortc stamps a report
    # with its last packet's RTP time (up to a frame old): single bursts seen at -7 to -42 ms in
    # 24 (mean -15). So: the mean within a frame, none past two (audio sent 40 ms late: -54 each).
    assert abs(float(np.mean(offsets))) <= FRAME_MS, offsets
    assert all(-2 * FRAME_MS <= o <= FRAME_MS for o in offsets), offsets


@pytest.mark.slow
def test_players_receive_video_and_audio_and_delete_their_resources(run: Run) -> None:
    done = run.player["done"]
    assert done["size"] == [512, 512] and done["frames"] > 100 and done["audio_buffers"] > 100
    assert (done["delete"], done["delete_again"]) == (200, 404)
    second = run.second["done"]  # a second viewer of the same session, through the relay
    assert second["frames"] > 25 and (second["delete"], second["delete_again"]) == (200, 404)


@pytest.mark.slow
def test_refusals_are_the_rfc_4xx(run: Run) -> None:
    assert run.checks == {
        "no_token": 401, "wrong_type": 415, "malformed": 400, "no_if_match": 428,
        "bad_if_match": 412, "unknown_whip": 404, "unknown_whep": 404, "third_viewer": 409,
    }  # fmt: skip


@pytest.mark.slow
def test_deleting_the_whip_resource_ends_the_session(run: Run) -> None:
    deleting = run.publisher["deleting"]
    assert (deleting["delete"], deleting["delete_again"]) == (200, 404)
    assert run.sessions == [1, 0]


def av_offsets_ms(record: dict[str, Any], samples: np.ndarray) -> list[float]:
    """Per tone burst: its marked video frame minus its onset in the audio, in ms, both on the
    player's presentation clock (GStreamer running time after rtpbin's lip sync)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from session_metrics import AudioOnsets, VideoOnsets, pair

    audio, at = [], 0
    for running, _, n in record["audio"]:
        audio.append((running + n * 1_000_000_000 // RATE, 0, samples[at : at + n]))  # its end
        at += n
    heard, seen = AudioOnsets(), VideoOnsets()
    heard.feed(audio)
    seen.feed([(running, 0, marked) for running, _, marked in record["video"]])
    return [round(o * 1000, 1) for _, o in pair(heard.onsets, seen.onsets)]
