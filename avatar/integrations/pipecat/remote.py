"""The avatar as a session of a remote ``avatar serve`` (:class:`RemoteAvatarService`)."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InterruptionFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameProcessor

from avatar.audio.pcm import to_mono, to_pcm16
from avatar.clock import Clock, MonotonicClock
from avatar.integrations.pipecat.frames import AudioOut, image_frame, tts_samples
from avatar.server.aiortc_hooks.receiver import shorten_audio_jitter_buffer
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S, OUTPUT_RATE

# -- a session on a remote `avatar serve` -----------------------------------------------------


class RemoteSession:
    """One session of a remote ``avatar serve`` (docs/engine.md): ``POST /offer`` with
    ``"audio": "none"`` answers an aiortc peer that receives the avatar's video and audio;
    ``/ws/audio`` takes the speech as s16le PCM. Not tested here: TURN, token expiry, a server
    behind the front (``server.workers`` > 1)."""

    def __init__(self, url: str, avatar: str | None = None, token: str | None = None) -> None:
        self.url, self.avatar, self.token = url.rstrip("/"), avatar, token
        self.pc: Any = None
        self.ws: Any = None
        self.tracks: asyncio.Queue[Any] = asyncio.Queue()
        self._http: Any = None
        self._rate: int | None = None

    async def open(self, timeout_s: float = 20.0) -> None:
        self._http = aiohttp.ClientSession()
        self.pc = pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self._offer(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        ws_url = self.url.replace("http", "ws", 1) + "/ws/audio"
        query = {"session": answer["session"], "key": answer.get("key", "")}
        self.ws = await asyncio.wait_for(self._http.ws_connect(ws_url, params=query), timeout_s)

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":  # aiortc holds 80 ms of audio back; the server paces it
            shorten_audio_jitter_buffer(self.pc, track, 0)
        self.tracks.put_nowait(track)

    async def _offer(self, sdp: str) -> dict[str, Any]:
        body: dict[str, Any] = {"sdp": sdp, "type": "offer", "audio": "none"}
        if self.avatar:
            body["avatar"] = self.avatar
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self._http.post(f"{self.url}/offer", json=body, headers=headers) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise ConnectionError(f"avatar serve refused the offer ({resp.status}): "
                                      f"{answer.get('error')}")  # fmt: skip
        return answer

    async def send(self, samples: np.ndarray, rate: int) -> None:
        """Mono float32 speech at ``rate`` (the server's socket slows a faster producer down)."""
        if rate != self._rate:
            await self.ws.send_json({"type": "format", "sample_rate": rate, "channels": 1})
            self._rate = rate
        await self.ws.send_bytes(to_pcm16(samples).tobytes())

    async def clear(self) -> None:
        await self.ws.send_json({"type": "clear"})

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_json({"type": "end"})
            await self.ws.close()
        if self.pc is not None:
            await self.pc.close()
        if self._http is not None:
            await self._http.close()


class RemoteAvatarService(FrameProcessor):
    """The avatar of a remote ``avatar serve`` (``url``), between the TTS and the output
    transport: TTS audio goes out over ``/ws/audio``, the avatar's frames come back over WebRTC
    and are pushed as the in-process service pushes them (images first, as they arrive).

    Unlike :class:`AvatarVideoService`: other frames are not held behind the audio (they go on at
    once); ``EndFrame`` waits until the returned audio has been quiet for ``end_quiet_s`` (at most
    ``end_timeout_s``) rather than for the exact end of the speech; stale frames after an
    interruption are those the server sent before it heard ``clear`` (a round trip)."""

    def __init__(
        self,
        url: str,
        *,
        avatar: str | None = None,
        token: str | None = None,
        max_ahead_s: float = 1.0,
        audio_delay_s: float = 0.04,
        end_quiet_s: float = 1.0,
        end_timeout_s: float = 10.0,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session = RemoteSession(url, avatar, token)
        self.max_ahead_ns = round(max_ahead_s * NS_PER_S)
        self.audio_delay_ns = round(audio_delay_s * NS_PER_S)
        self.end_quiet_s, self.end_timeout_s = end_quiet_s, end_timeout_s
        self.clock = clock or MonotonicClock()
        self._played_by = 0  # when the speech sent so far will have played (clock ns)
        self._audio: AudioOut | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._loud_ns = 0  # when the returned audio was last loud, or speech last sent

    async def setup(self, setup: Any) -> None:
        """Open the session (offer, answer, PCM socket) while the pipeline sets up."""
        await super().setup(setup)
        self._audio = AudioOut(setup.audio_out_sample_rate)
        await self.session.open()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def process_frame(self, frame: Any, direction: Any) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._readers = [spawn(self._read_tracks(), f"pipecat-remote-{id(self):x}")]
        elif isinstance(frame, TTSAudioRawFrame):
            await self._send(tts_samples(frame), frame.sample_rate)
        elif isinstance(frame, TTSStoppedFrame):
            await self._send(np.zeros(OUTPUT_RATE // 10, np.float32), OUTPUT_RATE)
            await self.push_frame(frame, direction)  # 100 ms of silence lets the tail out
        elif isinstance(frame, InterruptionFrame):
            await self.session.clear()
            self._played_by = self.clock.now_ns()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._wait_quiet()
            await self._close()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _send(self, samples: np.ndarray, rate: int) -> None:
        """Send speech at most ``max_ahead_s`` ahead of its playout. Waiting here keeps the rest
        in Pipecat's queue, which an interruption empties; the server reads ``clear`` behind the
        audio sent before it, at once while it is less than 4 s ahead (its own backpressure)."""
        now = self.clock.now_ns()
        if self._played_by - now > self.max_ahead_ns:
            await self.clock.sleep_until(self._played_by - self.max_ahead_ns)
            now = self.clock.now_ns()
        await self.session.send(samples, rate)
        self._played_by = max(self._played_by, now) + len(samples) * NS_PER_S // rate
        self._loud_ns = now  # the speech sent is still to come back

    async def _read_tracks(self) -> None:
        """A reader task per track the server sends (audio and video)."""
        for _ in range(2):
            track = await self.session.tracks.get()
            read = self._read_video if track.kind == "video" else self._read_audio
            self._readers.append(spawn(read(track), f"pipecat-remote-{track.kind}"))

    async def _read_video(self, track: Any) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                rgb = await loop.run_in_executor(None, partial(frame.to_ndarray, format="rgb24"))
                await self.push_frame(image_frame(rgb))

    async def _read_audio(self, track: Any) -> None:
        held: asyncio.Queue[tuple[int, np.ndarray]] = asyncio.Queue()
        self._readers.append(spawn(self._release_audio(held), "pipecat-remote-audio-out"))
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                held.put_nowait((self.clock.now_ns(), to_mono(frame)))

    async def _release_audio(self, held: asyncio.Queue[tuple[int, np.ndarray]]) -> None:
        """Returned audio leaves ``audio_delay_s`` after it came: the video of the same moment
        comes later (it is decoded), and its image must go first."""
        assert self._audio is not None
        while True:
            arrival, mono = await held.get()
            await self.clock.sleep_until(arrival + self.audio_delay_ns)
            if len(mono) and float(np.abs(mono).max()) > 1e-3:
                self._loud_ns = self.clock.now_ns()
            await self.push_frame(self._audio.frame(mono))

    async def _wait_quiet(self) -> None:
        """Until the returned audio has been quiet for ``end_quiet_s`` since the last speech
        was sent (the server reads ``/ws/audio`` at most 4 s ahead of playout) or the time-out."""
        quiet = round(self.end_quiet_s * NS_PER_S)
        deadline = self.clock.now_ns() + round(self.end_timeout_s * NS_PER_S)
        await self._send(np.zeros(OUTPUT_RATE // 10, np.float32), OUTPUT_RATE)
        while self.clock.now_ns() < deadline and self.clock.now_ns() - self._loud_ns < quiet:
            await self.clock.sleep_until(self.clock.now_ns() + NS_PER_S // 50)

    async def _close(self) -> None:
        readers, self._readers = self._readers, []
        await cancel(*readers)
        await self.session.close()
