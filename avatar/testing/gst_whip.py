"""A WHIP publisher and a WHEP player on GStreamer's webrtcbin: a WebRTC stack independent of
aiortc and of browsers, for tests and as an example client (docs/whip.md).

It runs under a Python that has GStreamer's bindings, not the project's virtual environment:
Debian's ``/usr/bin/python3`` with python3-gst-1.0, gir1.2-gst-plugins-bad-1.0, gstreamer1.0-nice,
gstreamer1.0-plugins-{base,good,bad} and gstreamer1.0-libav (``scripts/setup_system.sh``). It
imports nothing from this package and no numpy::

    python3 avatar/testing/gst_whip.py publish http://127.0.0.1:8080/whip --file speech.ogg
    python3 avatar/testing/gst_whip.py publish http://127.0.0.1:8080/whip --source autoaudiosrc
    python3 avatar/testing/gst_whip.py play http://127.0.0.1:8080/whep/ID --show

``publish`` sends a file (decoded, then paced in real time from the moment the connection is up)
or a live GStreamer source as Opus; it trickles its ICE candidates with PATCH (RFC 8840 fragments,
``If-Match``) and DELETEs its resource when the file has been sent (or on Ctrl-C, or with
``--wait-stdin`` when a line arrives). ``play`` offers to receive Opus and VP8, sends its offer
with every candidate in it, and shows (``--show``) or measures what arrives: with ``--record
DIR``, every decoded audio sample (``DIR/audio.f32``) and per buffer its running time (the time
the pipeline would present it) and arrival; per video frame whether the server's sync marker
(a white top-left square) is on it. Both print one JSON object per line: events as they happen
and a summary at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstVideo, GstWebRTC  # noqa: E402

RATE = 48000
PACKET = RATE // 50  # 20 ms
OPUS = "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111"
VP8 = "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96"
MARKER = (2, 22)  # rows and columns of the 24-pixel marker read (its edges may blur)


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, Any]:
    """One request: its status, headers (repeated ones listed) and body."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    found: dict[str, list[str]] = {}
    for k, v in hdrs.items():
        found.setdefault(k.lower(), []).append(v)
    return {"status": status, "headers": found, "body": data.decode(errors="replace")}


class Client:
    """webrtcbin, its offer, the HTTP exchange and trickled candidates (both roles)."""

    def __init__(self, args: argparse.Namespace, pipeline: Gst.Pipeline) -> None:
        self.args, self.pipe = args, pipeline
        self.loop = GLib.MainLoop()
        self.webrtc = pipeline.get_by_name("webrtc")
        self.resource: str | None = None  # the Location, absolute
        self.etag = ""
        self.pending: list[tuple[int, str]] = []  # candidates gathered before the 201
        self.gathered = self.end_sent = False  # all candidates gathered; a=end-of-candidates sent
        self.offer_sdp = ""
        self.t0 = time.monotonic()
        self.posted = 0.0
        self.patches: list[int] = []
        self.failed: str | None = None
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._on_candidate)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection)
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.args.token}"} if self.args.token else {}
        if content_type:
            h["Content-Type"] = content_type
        return h

    def run(self, limit_s: float) -> None:
        self.pipe.set_state(Gst.State.PLAYING)
        if limit_s:
            GLib.timeout_add(int(limit_s * 1000), self._give_up)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, self._interrupted)
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)

    def _interrupted(self) -> bool:
        if self.resource:
            emit(event="interrupted", **self.delete())
        self.finish()
        return False

    def _give_up(self) -> bool:
        self.fail(f"gave up after {self.args.limit} s")
        return False

    def fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            emit(event="failed", why=why, ms=ms_since(self.t0))
            if self.resource:  # the server would free it after its timeouts anyway
                emit(event="deleted", **self.delete())
            self.finish()

    def finish(self) -> None:
        self.loop.quit()

    def _on_error(self, bus: Gst.Bus, msg: Gst.Message) -> None:
        err, debug = msg.parse_error()
        GLib.idle_add(self.fail, f"GStreamer: {err.message} ({debug})")

    # -- the offer ------------------------------------------------------------------------------

    def _on_negotiation_needed(self, element: Gst.Element) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_offer, None)
        element.emit("create-offer", None, promise)

    def _on_offer(self, promise: Gst.Promise, _: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            GLib.idle_add(self.fail, f"no offer: {reply.to_string() if reply else None}")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        self.offer_sdp = offer.sdp.as_text()
        if self.args.trickle:
            GLib.idle_add(self.post, self.offer_sdp)

    def _on_gathering(self, element: Gst.Element, _: Any) -> None:
        state = element.get_property("ice-gathering-state")
        if state != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        if self.args.trickle:
            GLib.idle_add(self._trickle, [], True)
        else:  # the whole offer, every candidate in it
            sdp = element.get_property("local-description").sdp.as_text()
            GLib.idle_add(self.post, sdp)

    def post(self, sdp: str) -> bool:
        self.posted = time.monotonic()
        r = http("POST", self.args.url, sdp.encode(), self.headers("application/sdp"))
        h = r["headers"]
        location = h.get("location", [None])[0]
        emit(event="created", status=r["status"], ms=ms_since(self.posted),
             content_type=h.get("content-type", [None])[0], location=location,
             etag=h.get("etag", [None])[0], links=h.get("link", []),
             error=None if r["status"] == 201 else r["body"][:300])  # fmt: skip
        if r["status"] != 201 or not location:
            self.fail(f"POST answered {r['status']}")
            return False
        self.resource = urllib.parse.urljoin(self.args.url, location)
        self.etag = h.get("etag", [""])[0]
        _, answer = GstSdp.SDPMessage.new_from_text(r["body"])
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, answer)
        self.webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        self._trickle([], False)
        return False

    # -- trickle ICE (RFC 8840 fragments over PATCH) --------------------------------------------

    def _on_candidate(self, element: Gst.Element, mline: int, candidate: str) -> None:
        if self.args.trickle:
            GLib.idle_add(self._trickle, [(mline, candidate)], False)

    def _trickle(self, new: list[tuple[int, str]], gathered: bool) -> bool:
        self.pending += new
        self.gathered |= gathered
        end = self.gathered and not self.end_sent
        if self.resource is None or not (self.pending or end):
            return False  # before the 201: kept, then sent in one PATCH
        headers = {**self.headers("application/trickle-ice-sdpfrag"), "If-Match": self.etag}
        r = http("PATCH", self.resource, self._fragment(self.pending, end).encode(), headers)
        self.patches.append(r["status"])
        emit(event="patched", status=r["status"], candidates=len(self.pending), end=end)
        self.pending, self.end_sent = [], self.end_sent or end
        return False

    def _fragment(self, candidates: list[tuple[int, str]], end: bool) -> str:
        sdp = self.offer_sdp.replace("\r\n", "\n").split("\n")
        ice = [x for x in sdp if x.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
        media = next(x for x in sdp if x.startswith("m="))
        mid = next(x for x in sdp if x.startswith("a=mid:"))
        lines = ice + [media, mid] + [f"a={c}" for _, c in candidates]
        return "\r\n".join(lines + (["a=end-of-candidates"] if end else [])) + "\r\n"

    def _on_connection(self, element: Gst.Element, _: Any) -> None:
        state = element.get_property("connection-state")
        emit(event="connection", state=state.value_nick, ms=ms_since(self.t0))
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            GLib.idle_add(self.connected)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(self.fail, "the peer connection failed")

    def connected(self) -> bool:
        return False

    # -- the end --------------------------------------------------------------------------------

    def delete(self) -> dict[str, Any]:
        """DELETE the resource, then ask for it again (it must be gone)."""
        assert self.resource is not None
        first = http("DELETE", self.resource, None, self.headers())
        again = http("DELETE", self.resource, None, self.headers())
        return {"delete": first["status"], "delete_again": again["status"]}

    def running_ns(self) -> int:
        clock = self.pipe.get_clock()
        return int(clock.get_time() - self.pipe.get_base_time()) if clock else 0


# -- publish -------------------------------------------------------------------------------------


def decode(path: str) -> bytes:
    """A whole audio file as 48 kHz mono S16LE (GStreamer decodes it)."""
    pipe = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! audioconvert ! audioresample ! '
        f"audio/x-raw,format=S16LE,rate={RATE},channels=1 ! appsink name=out sync=false"
    )
    sink = pipe.get_by_name("out")
    pipe.set_state(Gst.State.PLAYING)
    chunks = []
    while (sample := sink.emit("pull-sample")) is not None:
        buf = sample.get_buffer()
        chunks.append(buf.extract_dup(0, buf.get_size()))
    pipe.set_state(Gst.State.NULL)
    return b"".join(chunks)


class Publisher(Client):
    """A file (paced from the connection on) or a live source, as Opus over WHIP."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.pcm = decode(args.file) if args.file else b""
        head = (f"appsrc name=src format=time max-bytes=0 caps=audio/x-raw,format=S16LE,"
                f"layout=interleaved,rate={RATE},channels=1 ! clocksync"
                if args.file else args.source)  # fmt: skip
        pipe = Gst.parse_launch(
            f"{head} ! audioconvert ! audioresample ! opusenc frame-size=20 ! rtpopuspay pt=111 "
            f"! {OPUS} ! webrtcbin name=webrtc bundle-policy=max-bundle"
        )
        super().__init__(args, pipe)
        # webrtcbin offers a pad's media once it knows its caps: say them before any data flows
        transceiver = self.webrtc.get_static_pad("sink_0").get_property("transceiver")
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        transceiver.set_property("codec-preferences", Gst.Caps.from_string(OPUS))

    def connected(self) -> bool:
        emit(event="connected", ms=ms_since(self.t0))
        if self.pcm:
            seconds = self._push_file()
            GLib.timeout_add(int((seconds + self.args.hold) * 1000), self.end)
        if self.args.wait_stdin:
            GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, self._on_stdin)
        return False

    def _push_file(self) -> float:
        """Every 20 ms of the file, stamped from 100 ms from now: ``clocksync`` paces them."""
        src = self.pipe.get_by_name("src")
        start = self.running_ns() + 100_000_000
        step = 2 * PACKET
        for i in range(0, len(self.pcm), step):
            buf = Gst.Buffer.new_wrapped(self.pcm[i : i + step])
            buf.pts = start + (i // 2) * Gst.SECOND // RATE
            buf.duration = Gst.SECOND // 50
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")
        seconds = len(self.pcm) / 2 / RATE
        emit(event="sending", seconds=round(seconds, 2), ms=ms_since(self.t0))
        return seconds + 0.1

    def _on_stdin(self, *_: Any) -> bool:
        sys.stdin.readline()
        self.end()
        return False

    def end(self) -> bool:
        if self.args.wait_stdin and self.pcm and not getattr(self, "_told", False):
            self._told = True  # the file is sent; DELETE when the caller says so
            emit(event="sent", ms=ms_since(self.t0))
            return False
        emit(event="deleting", ms=ms_since(self.t0), **self.delete(), patches=self.patches)
        self.finish()
        return False


# -- play ----------------------------------------------------------------------------------------


class Player(Client):
    """Receives the avatar over WHEP: shows it, or records what a player would present."""

    def __init__(self, args: argparse.Namespace) -> None:
        pipe = Gst.Pipeline.new("player")
        pipe.add(Gst.ElementFactory.make("webrtcbin", "webrtc"))
        super().__init__(args, pipe)
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        for caps in (OPUS, VP8):
            self.webrtc.emit("add-transceiver", recv, Gst.Caps.from_string(caps))
        self.webrtc.connect("pad-added", self._on_pad)
        self.video: list[list[Any]] = []  # [running ns, arrival ns, marker on]
        self.audio: list[list[int]] = []  # [running ns, arrival ns, samples]
        self.first_frame_ms: float | None = None
        self.samples: list[bytes] = []  # every decoded sample, for --record
        self.size: tuple[int, int] | None = None

    def _on_pad(self, element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self._on_decoded)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def _on_decoded(self, decodebin: Gst.Element, pad: Gst.Pad) -> None:
        kind = pad.get_current_caps().get_structure(0).get_name()
        if self.args.show:  # presented on the pipeline clock, in sync
            chain = ("videoconvert ! autovideosink" if kind.startswith("video")
                     else "audioconvert ! audioresample ! autoaudiosink")  # fmt: skip
        elif kind.startswith("video"):  # measured: the running time says when it would show
            chain = ("videoconvert ! video/x-raw,format=I420 ! appsink name=v emit-signals=true "
                     "sync=false")  # fmt: skip
        else:
            chain = (f"audioconvert ! audioresample ! audio/x-raw,format=F32LE,rate={RATE},"
                     "channels=1 ! appsink name=a emit-signals=true sync=false")  # fmt: skip
        branch = Gst.parse_bin_from_description(f"queue ! {chain}", True)
        self.pipe.add(branch)
        branch.sync_state_with_parent()
        pad.link(branch.get_static_pad("sink"))
        for name, callback in (("v", self._on_frame), ("a", self._on_audio)):
            sink = branch.get_by_name(name)
            if sink is not None:
                sink.connect("new-sample", callback)

    def _times(self, sample: Gst.Sample) -> tuple[int, int]:
        buf = sample.get_buffer()
        running = sample.get_segment().to_running_time(Gst.Format.TIME, buf.pts)
        return int(running), self.running_ns()

    def _on_frame(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        running, arrival = self._times(sample)
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        self.size = (info.width, info.height)
        _, mapped = sample.get_buffer().map(Gst.MapFlags.READ)
        data, stride, (a, b) = mapped.data, info.stride[0], MARKER
        corner = sum(sum(data[r * stride + a : r * stride + b]) for r in range(a, b))
        sample.get_buffer().unmap(mapped)
        self.video.append([running, arrival, corner / (b - a) ** 2 > 200])
        if self.first_frame_ms is None:
            self.first_frame_ms = ms_since(self.posted)
            emit(event="first_frame", ms=self.first_frame_ms, size=self.size)
            GLib.timeout_add(int(self.args.seconds * 1000), self._end)
        return Gst.FlowReturn.OK

    def _on_audio(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        running, arrival = self._times(sample)
        buf = sample.get_buffer()
        data = buf.extract_dup(0, buf.get_size())
        self.audio.append([running, arrival, len(data) // 4])
        if self.args.record:
            self.samples.append(data)
        return Gst.FlowReturn.OK

    def _end(self) -> bool:
        self.pipe.set_state(Gst.State.NULL)  # no more samples while we write
        deleted = self.delete()
        summary = {"first_frame_ms": self.first_frame_ms, "size": self.size,
                   "frames": len(self.video), "audio_buffers": len(self.audio)}  # fmt: skip
        summary.update(deleted)
        if self.args.record:  # written before "done": a reader of the event finds the files
            (Path(self.args.record) / "audio.f32").write_bytes(b"".join(self.samples))
            record = {"video": self.video, "audio": self.audio, **summary}
            (Path(self.args.record) / "record.json").write_text(json.dumps(record))
        emit(event="done", **summary)
        self.finish()
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["publish", "play"])
    ap.add_argument("url", help="the WHIP endpoint (publish) or the WHEP endpoint (play)")
    ap.add_argument("--token", default="", help="sent as Authorization: Bearer TOKEN")
    ap.add_argument("--file", help="publish: an audio file, sent in real time")
    ap.add_argument("--source", default="autoaudiosrc", help="publish: a live GStreamer source")
    ap.add_argument("--hold", type=float, default=1.0, help="publish: seconds after the file")
    ap.add_argument("--wait-stdin", action="store_true", help="publish: DELETE on a stdin line")
    ap.add_argument("--no-trickle", dest="trickle", action="store_false",
                    help="send every candidate in the offer (play always does)")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="play: stop this long after the first frame (0: at Ctrl-C)")  # fmt: skip
    ap.add_argument("--show", action="store_true", help="play: on screen and speakers")
    ap.add_argument("--record", help="play: a folder for audio.f32 and record.json")
    ap.add_argument("--limit", type=float, default=0.0, help="give up after this many s")
    args = ap.parse_args()
    Gst.init(None)
    if args.role == "play":
        args.trickle = False
        if not args.seconds:
            args.seconds = 1e6
    client: Client = Publisher(args) if args.role == "publish" else Player(args)
    client.run(args.limit)
    return 1 if client.failed else 0


if __name__ == "__main__":
    sys.exit(main())
