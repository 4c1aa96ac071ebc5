"""One browser session: its peer connection, engine, tracks, data channel and sockets.

Everything a session owns is released by :meth:`Session.close` (idempotent), which runs when the
peer disconnects or fails, when it never connects, and when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar.audio.pcm import to_mono
from avatar.clock import Clock
from avatar.config import LimitsConfig
from avatar.engine.engine import AvatarEngine
from avatar.engine.render import MARKER_PX
from avatar.errors import AudioInputError, TextError
from avatar.frames import AudioChunk, VideoFrame
from avatar.motion.channels import BLENDSHAPES
from avatar.observe import NULL_OBSERVER, Observer
from avatar.server.aiortc_hooks import watch_inbound
from avatar.server.limits import RateLimiter
from avatar.server.say import Speaker
from avatar.server.tracks import EngineAudioTrack, EngineVideoTrack
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")
MAX_SENT_BYTES = 60_000  # under the 64 KiB an SCTP data channel message may carry


class Session:
    """A connected (or connecting) peer and the engine that answers it."""

    def __init__(
        self,
        sid: str,
        pc: RTCPeerConnection,
        engine: AvatarEngine,
        clock: Clock,
        executor: Executor | None,
        *,
        avatar: str,
        mic: bool,
        stats_interval_s: float,
        observer: Observer = NULL_OBSERVER,
        limits: LimitsConfig | None = None,
        profile: bool = False,
        reap_s: float = 8.0,
    ) -> None:
        self.sid, self.pc, self.engine, self.clock = sid, pc, engine, clock
        self.avatar, self.mic, self.observer, self.profile = avatar, mic, observer, profile
        self.key = secrets.token_urlsafe(16)  # opens the session's sockets; the id does not
        self.limits = limits or LimitsConfig()
        rate = self.limits.messages_per_second
        self._messages = RateLimiter(clock, 60 * rate, max(int(2 * rate), 1), max_keys=1)
        self._told_rate = False
        self.candidates = 0  # trickled ICE candidates so far
        self.fps = 0.0  # over the last stats interval
        self.reap_ns = round(reap_s * NS_PER_S)  # a connected peer silent this long is gone
        self.video = EngineVideoTrack(executor, observer)
        self.profile_frames = False  # the peer asked for every frame's record
        self.audio = EngineAudioTrack(clock)
        # text for sessions without a microphone (`say`); festival starts when the session does
        self.speaker = None if mic else Speaker(
            engine, executor, self.send_error, max_queued=self.limits.say_queue,
            max_ahead_s=self.limits.max_audio_ahead_s,
        )  # fmt: skip
        self.channel: RTCDataChannel | None = None
        self.sockets: set[web.WebSocketResponse] = set()  # events sockets
        self.audio_sockets: set[web.WebSocketResponse] = set()  # PCM sockets
        self.blendshapes = False
        self.stats_interval_ns = round(stats_interval_s * NS_PER_S)
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._measured_reported = 0
        self.on_closed: Callable[[Session], None] | None = None  # the server forgets the session
        self.reason = ""  # why it ended (avatar.cluster.records.REASONS), set by its first close

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connected: start the engine and the frame pump (once)."""
        if self._started or self.closed.is_set():
            return
        self._started = True
        self.engine.start()
        if self.speaker is not None:
            self.speaker.warm()
        self._tasks.append(spawn(self._pump(), f"pump-{self.sid}"))
        last_inbound = watch_inbound(self.pc, self.clock)
        self._tasks.append(spawn(self._reap_when_silent(last_inbound), f"reap-{self.sid}"))

    def add_task(self, task: asyncio.Task[Any]) -> None:
        """A task that lives no longer than the session (cancelled by :meth:`close`)."""
        self._tasks.append(task)

    def read_microphone(self, track: MediaStreamTrack) -> None:
        self._tasks.append(spawn(self._read_mic(track), f"mic-{self.sid}"))

    async def _reap_when_silent(self, last_inbound: Callable[[], int]) -> None:
        while not self.closed.is_set():
            silent = self.clock.now_ns() - last_inbound()
            if silent >= self.reap_ns:
                await self.on_gone(f"peer silent for {silent / NS_PER_S:.1f} s", "reaped")
                return
            await self.clock.sleep_until(last_inbound() + self.reap_ns)

    async def on_gone(self, why: str, reason: str = "client_left") -> None:
        """The page went away (its data channel or events socket closed): free everything now
        rather than when ICE consent times out (~30 s); or it went silent (``reap_s``,
        ``reason`` reaped)."""
        if not self.closed.is_set():
            log.info("session %s: %s", self.sid, why)
            await self.close(reason)
            if self.on_closed is not None:
                self.on_closed(self)

    async def close(self, reason: str = "stopped") -> None:
        """Free everything; ``reason`` says why (the first close's reason is kept)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.reason = reason
        await cancel(*self._tasks)
        if self.speaker is not None:
            await self.speaker.aclose()
        await self.engine.aclose()
        self.video.stop()  # empties its queue and wakes whoever waits on it
        self.audio.stop()
        for ws in [*self.sockets, *self.audio_sockets]:
            await ws.close()
        try:
            await self.pc.close()
        except Exception as exc:  # aiortc, on offers it half took: the rest is freed anyway
            log.warning("session %s: closing its peer connection: %r", self.sid, exc)
        log.info("session %s closed", self.sid)

    # -- messages -------------------------------------------------------------------------

    def attach_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("close", lambda: spawn(self.on_gone("data channel closed"), f"gone-{self.sid}"))

        @channel.on("message")
        def on_message(message: Any) -> None:
            self.handle_message(message)

        if channel.readyState == "open":
            self.send(self.ready_message())
        else:
            channel.on("open", lambda: self.send(self.ready_message()))

    def ready_message(self) -> dict[str, Any]:
        msg = {
            "type": "ready", "session": self.sid, "avatar": self.avatar,
            "fps": self.engine.fps, "size": self.engine.renderer.size,
            "blendshapes": list(BLENDSHAPES), "profile": self.profile,
        }  # fmt: skip
        if self.engine.cfg.sync_marker:
            msg["marker"] = {"x": 0, "y": 0, "size": MARKER_PX}
        return msg

    def admit_message(self, message: Any) -> bool:
        """Size and rate limits of control messages (both channels): False = dropped, and the
        peer is told (the rate error once per burst)."""
        size = len(message) if isinstance(message, str | bytes) else 0
        if size > self.limits.max_message_kb << 10:
            self.send_error(f"message of {size} bytes refused (at most "
                            f"{self.limits.max_message_kb} KiB)")  # fmt: skip
            return False
        if self._messages.take("peer") > 0:
            if not self._told_rate:
                rate = self.limits.messages_per_second
                self.send_error(f"too many messages (at most {rate:g} per second): dropped")
                self._told_rate = True
            return False
        self._told_rate = False
        return True

    def handle_message(self, message: Any) -> None:
        """A control message from the data channel."""
        if self.admit_message(message):
            self.dispatch(json_object(message))

    def dispatch(self, msg: dict[str, Any] | None) -> None:
        """An admitted control message, parsed (None: it was not a JSON object)."""
        kind = msg.get("type") if msg is not None else None
        if msg is None or not isinstance(kind, str):
            self.send_error("messages are JSON objects with a string 'type'")
        elif kind == "clear":
            self.clear()
        elif kind == "say":
            self.say(msg.get("text"), msg.get("voice"))
        elif kind == "subscribe":
            self.blendshapes = bool(msg.get("blendshapes", self.blendshapes))
            self.profile_frames = bool(msg.get("profile_frames", self.profile_frames))
        else:
            self.send_error(f"unknown message type {kind[:40]!r}")

    def say(self, text: object, voice: object) -> None:
        """Speak ``text`` (see :mod:`avatar.server.say`); a mistake is one error event."""
        if self.speaker is None:
            self.send_error("say: this session takes its audio from the microphone; open it "
                            "with \"audio\": \"none\" to send text")  # fmt: skip
            return
        try:
            self.speaker.say(text, voice)
        except TextError as exc:
            self.send_error(f"say: {exc}")

    def clear(self) -> None:
        if self.speaker is not None:
            self.speaker.clear()
        self.engine.clear_buffer()
        while not self.audio.queue.empty():
            self.audio.queue.get_nowait()

    def send_error(self, message: str) -> None:
        self.send({"type": "error", "message": message})

    def send(self, msg: dict[str, Any]) -> None:
        """To the data channel (if open) and every events socket."""
        text = json.dumps(msg, separators=(",", ":"))
        if len(text) > MAX_SENT_BYTES:
            log.warning("session %s: %s message of %d bytes not sent", self.sid,
                        msg.get("type"), len(text))  # fmt: skip
            return
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        for ws in list(self.sockets):
            if ws.closed:
                self.sockets.discard(ws)
            else:
                spawn(_send_quietly(ws, text), f"ws-send-{self.sid}")

    # -- media ----------------------------------------------------------------------------

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                chunk = AudioChunk(to_mono(frame), frame.sample_rate)
                self.engine.push_audio(chunk)
        except MediaStreamError:
            return
        except AudioInputError as exc:
            self.send({"type": "error", "message": str(exc)})

    async def _pump(self) -> None:
        next_stats = self.clock.now_ns() + self.stats_interval_ns
        frames_at_last = 0
        async for frame in self.engine:
            for fault in self.engine.take_faults():
                self.send_error(fault)
            self.video.offer(frame)
            if frame.audio is not None:
                self.audio.offer(frame.audio)
            self._send_frame_messages(frame)
            now = self.clock.now_ns()
            if now >= next_stats:
                elapsed = (now - next_stats + self.stats_interval_ns) / NS_PER_S
                self.fps = (self.engine.stats.frames - frames_at_last) / elapsed
                frames_at_last = self.engine.stats.frames
                self.send(self.stats_message(self.fps))
                for msg in self.observer.report(self.profile_frames):
                    self.send(msg)
                next_stats = now + self.stats_interval_ns

    def _send_frame_messages(self, frame: VideoFrame) -> None:
        for event in frame.events:
            self.send({"type": event.kind.value, "pts_ms": event.pts_ns / 1e6})
        if self.blendshapes and frame.motion is not None:
            m = frame.motion
            self.send({
                "type": "blendshapes", "frame": frame.index, "pts_ms": frame.pts_ns / 1e6,
                "values": [round(float(v), 4) for v in m.blendshapes],
                "blink": round(float(m.blink), 4),
                "head": [round(float(v), 5) for v in m.head_pose],
            })  # fmt: skip

    def stats_message(self, fps: float) -> dict[str, Any]:
        """Counters since the start; latency over the frames since the last message."""
        s = self.engine.stats
        new = min(s.measured - self._measured_reported, len(s.latencies_ns))
        recent = np.asarray(s.latencies_ns)[len(s.latencies_ns) - new :]
        self._measured_reported = s.measured
        p50, p95 = (np.percentile(recent, [50, 95]) / 1e6) if len(recent) else (np.nan, np.nan)
        return {
            "type": "stats", "fps": round(fps, 2), "frames": s.frames, "late": s.late,
            "skipped": s.skipped, "idle": s.filled, "dropped": s.dropped + self.video.dropped,
            "latency_ms": {"p50": _ms(float(p50)), "p95": _ms(float(p95))},
            "queue": self.engine.backlog,
        }  # fmt: skip

    def queue_depths(self) -> dict[str, float]:
        """What waits in this session's queues (for metrics)."""
        return {"backlog": self.engine.backlog, "video_out": self.video.queue.qsize(),
                "audio_out": self.audio.queue.qsize(),
                "audio_in_s": self.engine.pending_audio_s}  # fmt: skip


async def _send_quietly(ws: web.WebSocketResponse, text: str) -> None:
    """A socket may close while a message to it waits: that is not an error."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(text)


def json_object(message: Any) -> dict[str, Any] | None:
    """``message`` parsed, if it is a JSON object (else None)."""
    if not isinstance(message, str | bytes):
        return None
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _ms(v: float) -> float | None:
    return None if v != v else round(v, 1)
