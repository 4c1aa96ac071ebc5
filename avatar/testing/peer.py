"""A real aiortc client peer for ``avatar serve``: sends speech as a microphone would, records
what comes back (tests, ``scripts/measure_session.py``, load tests).

The outgoing track paces 20 ms packets on the injected clock like a capture device; received
video and audio frames are kept with their arrival time on the same clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from avatar.audio.pcm import to_mono, to_pcm16
from avatar.clock import Clock, MonotonicClock
from avatar.server.aiortc_hooks import shorten_audio_jitter_buffer
from avatar.server.tracks import pcm16_frame
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S, OUTPUT_RATE, PACKET_SAMPLES


class SpeechTrack(MediaStreamTrack):
    """Mono float32 48 kHz samples as a live microphone: 20 ms frames on the clock, then
    silence (a real microphone never stops sending); with ``loop``, the samples again and again
    (long runs: only the first packet's send time is kept)."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, clock: Clock, loop: bool = False) -> None:
        super().__init__()
        self.pcm, self.clock, self.loop = to_pcm16(samples), clock, loop
        self.sent = 0  # samples sent
        self._start: int | None = None
        self.send_times: list[int] = []  # clock time each packet left, by packet number

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self.clock.now_ns()
        await self.clock.sleep_until(self._start + self.sent * NS_PER_S // OUTPUT_RATE)
        frame = pcm16_frame(self._piece(), self.sent)
        self.sent += PACKET_SAMPLES
        if not self.loop or not self.send_times:
            self.send_times.append(self.clock.now_ns())
        return frame

    def _piece(self) -> np.ndarray:
        if self.loop:
            return self.pcm[np.arange(self.sent, self.sent + PACKET_SAMPLES) % len(self.pcm)]
        piece = self.pcm[self.sent : self.sent + PACKET_SAMPLES]
        if len(piece) < PACKET_SAMPLES:
            piece = np.concatenate([piece, np.zeros(PACKET_SAMPLES - len(piece), np.int16)])
        return piece


@dataclass(slots=True)
class Received:
    """Frames that came back, with their arrival time on the client's clock."""

    video: list[tuple[int, int, Any]] = field(default_factory=list)  # (arrival ns, pts, summary)
    audio: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (arrival, pts, mono)
    messages: list[dict[str, Any]] = field(default_factory=list)


class AvatarPeer:
    """Connects to a server, sends ``speech``, records the avatar's video and audio.

    ``summarize(rgb) -> Any`` reduces each received video frame (keep the whole image only
    when needed: 512x512 RGB is 768 kB per frame)."""

    def __init__(
        self,
        base_url: str,
        speech: np.ndarray | None,
        *,
        avatar: str | None = None,
        clock: Clock | None = None,
        summarize: Callable[[np.ndarray], Any] | None = None,
        subscribe: dict[str, bool] | None = None,
        token: str | None = None,
        rtc_config: RTCConfiguration | None = None,
        loop: bool = False,
        pool: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.pool = pool  # a node pool's gateway: the pool to place the session on
        self.clock = clock or MonotonicClock()
        self.avatar = avatar
        self.speech = SpeechTrack(speech, self.clock, loop) if speech is not None else None
        self.summarize = summarize or (lambda img: float(img.mean()))
        self.token = token  # sent as ``Authorization: Bearer`` with the offer
        self.pc = RTCPeerConnection(rtc_config or RTCConfiguration(iceServers=[]))
        self.received = Received()
        self.subscribe = subscribe  # e.g. {"profile_frames": True}, sent when the channel opens
        self.session = ""
        self.key = ""  # the session's secret for /ws and /ws/audio (from the answer)
        self.channel: RTCDataChannel | None = None  # the control channel (once offered)
        self.connected = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def connect(self, timeout_s: float = 20.0) -> None:
        answer = await self.send_offer()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def send_offer(self) -> dict[str, Any]:
        """Offer and answer only (the session exists on the server, nothing connects yet)."""
        pc = self.pc
        channel = self.channel = pc.createDataChannel("avatar")
        channel.on("message", lambda m: self.received.messages.append(_json(m)))
        if self.subscribe:
            text = json.dumps({"type": "subscribe", **self.subscribe})
            channel.on("open", lambda: channel.send(text))
        if self.speech is not None:
            pc.addTransceiver(self.speech, direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer",
                "audio": "mic" if self.speech is not None else "none"}  # fmt: skip
        if self.avatar:
            body["avatar"] = self.avatar
        if self.pool:
            body["pool"] = self.pool
        url = f"{self.base_url}/offer"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=body, headers=headers) as resp,
        ):
            answer: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"offer refused ({resp.status}): {answer.get('error')}")
        self.session, self.key = answer["session"], answer.get("key", "")
        return answer

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":  # as the server does: no 80 ms hold before decoding
            shorten_audio_jitter_buffer(self.pc, track, 0)
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(spawn(reader(track), f"peer-{track.kind}"))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = self.clock.now_ns()
                rgb = frame.to_ndarray(format="rgb24")  # type: ignore[union-attr]
                self.received.video.append((now, int(frame.pts or 0), self.summarize(rgb)))
        except MediaStreamError:
            return

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = self.clock.now_ns()
                assert isinstance(frame, av.AudioFrame)
                self.received.audio.append((now, int(frame.pts or 0), to_mono(frame)))
        except MediaStreamError:
            return

    def socket_url(self, path: str = "/ws") -> str:
        """The session's ``/ws`` or ``/ws/audio`` address, with its id and key."""
        ws = self.base_url.replace("http", "ws", 1)
        return f"{ws}{path}?session={self.session}&key={self.key}"

    def vanish(self) -> None:
        """Drop off the network without a word, as a peer whose machine went away: the UDP
        sockets under ICE close, nothing (no DTLS alert, no SCTP abort) is sent. For tests of
        how soon the server gives a vanished peer up."""
        for t in self.pc.getTransceivers():
            ice = t.receiver.transport.transport
            for protocol in getattr(ice._connection, "_protocols", []):
                if protocol.transport is not None:
                    protocol.transport.abort()

    async def close(self) -> None:
        await cancel(*self._tasks)
        await self.pc.close()


def _json(message: Any) -> dict[str, Any]:
    try:
        data = json.loads(message)
    except (TypeError, ValueError):
        return {"type": "invalid", "raw": str(message)[:200]}
    return data if isinstance(data, dict) else {"type": "invalid"}
