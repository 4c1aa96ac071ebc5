"""One browser session: its peer connection, engine, tracks, data channel and sockets.

Everything a session owns is released by :meth:`Session.close` (idempotent), which runs when the
peer disconnects or fails, when it never connects, and when the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from avatar.engine.engine import AvatarEngine
from avatar.engine.render import MARKER_PX
from avatar.errors import AudioInputError
from avatar.frames import AudioChunk, VideoFrame
from avatar.motion.channels import BLENDSHAPES
from avatar.observe import NULL_OBSERVER, Observer
from avatar.server.tracks import EngineAudioTrack, EngineVideoTrack
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")


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
    ) -> None:
        self.sid, self.pc, self.engine, self.clock = sid, pc, engine, clock
        self.avatar, self.mic, self.observer = avatar, mic, observer
        self.video = EngineVideoTrack(executor, observer)
        self.profile_frames = False  # the peer asked for every frame's record
        self.audio = EngineAudioTrack(clock)
        self.channel: RTCDataChannel | None = None
        self.sockets: set[web.WebSocketResponse] = set()
        self.blendshapes = False
        self.stats_interval_ns = round(stats_interval_s * NS_PER_S)
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._measured_reported = 0
        self.on_closed: Callable[[Session], None] | None = None  # the server forgets the session

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connected: start the engine and the frame pump (once)."""
        if self._started or self.closed.is_set():
            return
        self._started = True
        self.engine.start()
        self._tasks.append(spawn(self._pump(), f"pump-{self.sid}"))

    def read_microphone(self, track: MediaStreamTrack) -> None:
        self._tasks.append(spawn(self._read_mic(track), f"mic-{self.sid}"))

    async def on_gone(self, why: str) -> None:
        """The page went away (its data channel or events socket closed): free everything now
        rather than when ICE consent times out (~30 s)."""
        if not self.closed.is_set():
            log.info("session %s: %s", self.sid, why)
            await self.close()
            if self.on_closed is not None:
                self.on_closed(self)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        await cancel(*self._tasks)
        await self.engine.aclose()
        self.video.stop()
        self.audio.stop()
        for ws in list(self.sockets):
            await ws.close()
        await self.pc.close()
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
            "blendshapes": list(BLENDSHAPES), "profile": self.observer.enabled,
        }  # fmt: skip
        if self.engine.cfg.sync_marker:
            msg["marker"] = {"x": 0, "y": 0, "size": MARKER_PX}
        return msg

    def handle_message(self, message: Any) -> None:
        """A control message from the data channel or the events socket."""
        try:
            msg = json.loads(message)
            kind = msg["type"]
        except (TypeError, ValueError, KeyError):
            self.send({"type": "error", "message": "messages are JSON objects with a 'type'"})
            return
        if kind == "clear":
            self.clear()
        elif kind == "subscribe":
            self.blendshapes = bool(msg.get("blendshapes", self.blendshapes))
            self.profile_frames = bool(msg.get("profile_frames", self.profile_frames))
        else:
            self.send({"type": "error", "message": f"unknown message type {kind!r}"})

    def clear(self) -> None:
        self.engine.clear_buffer()
        while not self.audio.queue.empty():
            self.audio.queue.get_nowait()

    def send(self, msg: dict[str, Any]) -> None:
        """To the data channel (if open) and every events socket."""
        text = json.dumps(msg, separators=(",", ":"))
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        for ws in list(self.sockets):
            if ws.closed:
                self.sockets.discard(ws)
            else:
                spawn(ws.send_str(text), f"ws-send-{self.sid}")

    # -- media ----------------------------------------------------------------------------

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                chunk = AudioChunk(to_mono(frame), frame.sample_rate, 0)
                self.engine.push_audio(chunk)
        except MediaStreamError:
            return
        except AudioInputError as exc:
            self.send({"type": "error", "message": str(exc)})

    async def _pump(self) -> None:
        next_stats = self.clock.now_ns() + self.stats_interval_ns
        frames_at_last = 0
        async for frame in self.engine:
            self.video.offer(frame)
            if frame.audio is not None:
                self.audio.offer(frame.audio)
            self._send_frame_messages(frame)
            now = self.clock.now_ns()
            if now >= next_stats:
                elapsed = (now - next_stats + self.stats_interval_ns) / NS_PER_S
                fps = (self.engine.stats.frames - frames_at_last) / elapsed
                frames_at_last = self.engine.stats.frames
                self.send(self.stats_message(fps))
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


def _ms(v: float) -> float | None:
    return None if v != v else round(v, 1)
