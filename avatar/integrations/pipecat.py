"""Pipecat: the avatar as the video of a Pipecat bot (``pip install 'avatar[pipecat]'``).

Both services go between the TTS and the output transport (docs/integrations.md)::

    Pipeline([transport.input(), stt, user_agg, llm, tts,
              AvatarVideoService(cfg),                 # or RemoteAvatarService("http://host:8080")
              transport.output(), assistant_agg])

:class:`AvatarVideoService` owns an engine in this process; :class:`RemoteAvatarService` drives a
session of a remote ``avatar serve`` (TTS audio over ``/ws/audio``, video and audio back over
WebRTC). ``TTSAudioRawFrame`` goes into the engine and is not passed on. Out come, per video
frame, an ``OutputImageRawFrame`` (``sync_with_audio``: the transport shows it when the audio
pushed before it has been sent), then that frame's audio as a ``SpeechOutputAudioRawFrame`` at
the pipeline's output rate: image first (pushed after its audio it shows a frame late). While
the bot is silent the listening face keeps coming at the engine's fps. The output transport
makes ``BotStarted/StoppedSpeakingFrame`` from the audio it plays (as for HeyGen's service);
the services make none. ``InterruptionFrame`` clears the engine (frames of the dropped speech
are not sent); ``EndFrame`` lets the speech play out, then closes the engine; ``CancelFrame``
closes it at once. In process, frames that come after TTS audio (``TTSTextFrame``,
``TTSStoppedFrame``...) leave after the video frames of that audio, as without an avatar.

SmallWebRTC: use :func:`smallwebrtc_transport`. Pipecat's video track stamps every frame 1/30 s
after the one before (aiortc's ``VideoStreamTrack.next_timestamp``): at 25 fps its clock runs
17 % slow against the audio; and its video task sends the latest image on its own beat, up to a
frame after its audio. :func:`fit_video_track` fixes both.

Not tested here: a browser's lip sync (tests use an aiortc peer), real STT/LLM/TTS services,
transports other than SmallWebRTC and Pipecat's base output transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        InterruptionFrame,
        OutputImageRawFrame,
        SpeechOutputAudioRawFrame,
        StartFrame,
        SystemFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.transports.base_transport import TransportParams
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"{exc.name} is missing: install the Pipecat extra, pip install 'avatar[pipecat]'"
    ) from exc

from avatar.audio.pcm import from_pcm16, to_mono, to_pcm16
from avatar.audio.resample import MonoStream, mono_stream
from avatar.clock import Clock, MonotonicClock
from avatar.compose.engines import build_engine
from avatar.config import Config, load_config
from avatar.engine.engine import AvatarEngine
from avatar.frames import AudioChunk, VideoFrame
from avatar.server.aiortc_hooks.receiver import shorten_audio_jitter_buffer
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S, OUTPUT_RATE, VIDEO_CLOCK

log = logging.getLogger("avatar.pipecat")
EngineBuilder = Callable[[], AvatarEngine]
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
ORDER_SLACK = 48  # output samples (1 ms): resampling rounds the pushed count
VIDEO_CHECKS = 4  # SmallWebRTC: the video task looks for a new image 4 times per frame


# -- frames: Pipecat <-> engine ---------------------------------------------------------------


def tts_samples(frame: Any) -> np.ndarray:
    """A Pipecat audio frame (s16le, interleaved channels) -> mono float32."""
    pcm = np.frombuffer(frame.audio, "<i2")
    channels = max(int(frame.num_channels), 1)
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    return from_pcm16(pcm)


def image_frame(image: np.ndarray) -> Any:
    """An RGB image as an ``OutputImageRawFrame`` the transport shows in step with its audio."""
    h, w = image.shape[:2]
    frame = OutputImageRawFrame(image=image.tobytes(), size=(w, h), format="RGB")
    frame.sync_with_audio = True
    return frame


class AudioOut:
    """Engine audio (mono float32 at ``rate_in``) -> ``SpeechOutputAudioRawFrame`` at ``rate``
    (one streaming resampler: a frame's pieces join without clicks)."""

    def __init__(self, rate: int, rate_in: int = OUTPUT_RATE) -> None:
        self.rate, self.rate_in = rate, rate_in
        self._resampler: MonoStream | None = None
        self.reset()

    def reset(self) -> None:
        """A new filter (an interruption: the old one's tail of the speech would sound after
        it, and Pipecat's transport would call that the bot speaking)."""
        if self.rate != self.rate_in:
            self._resampler = mono_stream(self.rate, self.rate_in)

    def frame(self, samples: np.ndarray) -> Any:
        if self._resampler is not None:
            samples = self._resampler.push(samples)
        pcm = to_pcm16(samples).tobytes()
        return SpeechOutputAudioRawFrame(audio=pcm, sample_rate=self.rate, num_channels=1)


class InOrder:
    """Downstream frames that came after TTS audio wait until the video frames of that audio
    are out (counts are output-rate samples: pushed into the engine, and out of it)."""

    def __init__(self) -> None:
        self.pushed = 0.0
        self.out = 0.0
        self._held: deque[tuple[float, Any]] = deque()

    @property
    def pending(self) -> bool:
        """Pushed audio has not all come out yet."""
        return self.out + ORDER_SLACK < self.pushed

    def audio_in(self, samples: int, rate: int) -> None:
        self.pushed += samples * OUTPUT_RATE / rate

    def hold(self, frame: Any) -> bool:
        """Keep ``frame`` if audio before it is still to come out (then it is held)."""
        if not self._held and not self.pending:
            return False
        self._held.append((self.pushed, frame))
        return True

    def audio_out(self, samples: int) -> list[Any]:
        """``samples`` of pushed audio went out: the frames that may follow now. Silence the
        engine added (after an interruption) or that released the speech's tail is not counted
        as pushed: what comes out never runs ahead of what was pushed."""
        self.out = min(self.out + samples, self.pushed)
        ready = []
        while self._held and self._held[0][0] <= self.out + ORDER_SLACK:
            ready.append(self._held.popleft()[1])
        return ready

    def interrupt(self) -> list[Any]:
        """The audio is dropped: interruptible frames go with it, the others may follow now."""
        self.out = self.pushed
        kept = [f for _, f in self._held if not f.interruptible]
        self._held.clear()
        return kept

    def flush(self) -> list[Any]:
        frames = [f for _, f in self._held]
        self._held.clear()
        return frames


# -- the in-process service -------------------------------------------------------------------


class AvatarVideoService(FrameProcessor):
    """The avatar's engine in this process, between the TTS and the output transport (see the
    module docstring for what it does with each frame).

    ``config``: the engine's configuration (``load_config()`` if None). ``engine``: builds the
    engine instead (tests pass one on a fake clock; it is called in an executor during the
    pipeline's set-up, where models load). ``clock``: the clock of the default engine."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        engine: EngineBuilder | None = None,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if engine is None:
            cfg = config or load_config()
            engine = partial(build_engine, cfg, clock or MonotonicClock(), realtime=True)
        self._build = engine
        self.engine: AvatarEngine | None = None
        self._audio: AudioOut | None = None
        self._order = InOrder()
        self._pump: asyncio.Task[None] | None = None
        self._cleared_ns: int | None = None  # engine clock: frames rendered before are stale

    async def setup(self, setup: Any) -> None:
        """Build the engine off the event loop (it loads models) for the output rate."""
        await super().setup(setup)
        self._audio = AudioOut(setup.audio_out_sample_rate)
        loop = asyncio.get_running_loop()
        self.engine = await loop.run_in_executor(None, self._build)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def process_frame(self, frame: Any, direction: Any) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # the transport starts before frames come
            self._start()
        elif isinstance(frame, TTSAudioRawFrame):
            self._push_tts(frame)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._end(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        else:
            await self._pass(frame, direction)

    def _start(self) -> None:
        if self.engine is not None and self._pump is None:
            self.engine.start()
            self._pump = spawn(self._frames_out(self.engine), f"pipecat-avatar-{id(self):x}")

    def _push_tts(self, frame: Any) -> None:
        if self.engine is None or self._pump is None:
            return
        samples = tts_samples(frame)
        self.engine.push_audio(AudioChunk(samples, frame.sample_rate))
        self._order.audio_in(len(samples), frame.sample_rate)

    async def _pass(self, frame: Any, direction: Any) -> None:
        """Upstream and system frames go at once; the rest keep their place after the audio."""
        downstream = direction == FrameDirection.DOWNSTREAM
        if downstream and not isinstance(frame, SystemFrame) and self._order.hold(frame):
            if isinstance(frame, TTSStoppedFrame):
                self._release_tail()
            return
        await self.push_frame(frame, direction)

    def _release_tail(self) -> None:
        """Silence after the speech: the engine holds its model's look-ahead back until more
        audio comes; this much more lets the speech's last frame out."""
        engine = self.engine
        if engine is None or self._pump is None or not self._order.pending:
            return
        pad = engine.motion.delay + round(OUTPUT_RATE / engine.fps)
        engine.push_audio(AudioChunk(np.zeros(pad, np.float32), OUTPUT_RATE))

    async def _interrupt(self, frame: Any, direction: Any) -> None:
        if self.engine is not None and self._pump is not None:
            self.engine.clear_buffer()
            self._cleared_ns = self.engine.clock.now_ns()
        if self._audio is not None:
            self._audio.reset()
        for kept in self._order.interrupt():
            await self.push_frame(kept)
        await self.push_frame(frame, direction)

    async def _end(self, frame: Any, direction: Any) -> None:
        """The audio pushed so far plays out, then the engine closes and ``frame`` goes on."""
        pump = self._pump
        if self.engine is not None and pump is not None:
            self._release_tail()
            self.engine.end_input()
            await asyncio.wait([pump])
        await self._close()
        for held in self._order.flush():
            await self.push_frame(held)
        await self.push_frame(frame, direction)

    async def _close(self) -> None:
        pump, self._pump = self._pump, None
        await cancel(pump)
        if self.engine is not None:
            await self.engine.aclose()

    async def _frames_out(self, engine: AvatarEngine) -> None:
        """Each engine frame: its image, then its audio; then the frames waiting for it."""
        assert self._audio is not None
        async for video in engine:
            if self._stale(video) or video.audio is None:
                continue
            await self.push_frame(image_frame(video.image))
            if self._stale(video):  # an interruption came meanwhile: its audio is dropped
                continue
            await self.push_frame(self._audio.frame(video.audio.samples))
            if video.timing is not None and video.timing.source_index >= 0:
                for held in self._order.audio_out(len(video.audio.samples)):
                    await self.push_frame(held)

    def _stale(self, video: VideoFrame) -> bool:
        """Rendered from pushed audio before the last interruption."""
        timing, cleared = video.timing, self._cleared_ns
        return (
            cleared is not None
            and timing is not None
            and timing.source_index >= 0
            and timing.render_start_ns < cleared
        )


# -- transports -------------------------------------------------------------------------------


def transport_params(cfg: Config, checks_per_frame: int = 1, **overrides: Any) -> Any:
    """``TransportParams`` for the avatar: audio and video out at ``render.size`` (images of
    another size are resized, per frame), audio written in chunks that tile a video frame
    (10 ms multiples: 40 ms at 25 fps, 10 ms at 30 fps) and ``video_out_is_live`` off (images
    come with their audio). The transport's video task sends the latest image
    ``checks_per_frame`` times per frame (``video_out_framerate``); more than 1 only with a
    track that sends each image once (:func:`smallwebrtc_transport`)."""
    fps = cfg.motion.fps
    chunks = next((n for n in (4, 2) if (100 / (n * fps)).is_integer()), 1)
    params: dict[str, Any] = {
        "audio_out_enabled": True,
        "video_out_enabled": True,
        "video_out_is_live": False,
        "video_out_width": cfg.render.size,
        "video_out_height": cfg.render.size,
        "video_out_framerate": round(fps * checks_per_frame),
        "audio_out_10ms_chunks": chunks,
    }
    return TransportParams(**{**params, **overrides})


def smallwebrtc_transport(
    connection: Any, cfg: Config, clock: Clock | None = None, **overrides: Any
) -> Any:
    """A ``SmallWebRTCTransport`` for the avatar (:func:`transport_params`), its video fixed
    when a client connects (the transport makes its tracks then), see :func:`fit_video_track`:
    each image is sent once, within a quarter frame of its audio, stamped with its send time."""
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    params = transport_params(cfg, VIDEO_CHECKS, **overrides)
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=params)
    clock = clock or MonotonicClock()

    async def on_connected(_transport: Any, client: Any) -> None:
        tracks = [t.sender.track for t in client.pc.getTransceivers() if t.sender]
        fitted = [fit_video_track(t, clock) for t in tracks if t is not None and t.kind == "video"]
        if not fitted:
            log.warning("SmallWebRTC sends no video track: video_out_enabled=True is needed")

    transport.add_event_handler("on_client_connected", on_connected)
    return transport


def fit_video_track(track: Any, clock: Clock) -> Any:
    """Pipecat's SmallWebRTC video track (``RawVideoTrack``), fixed for the avatar:

    - stamped by a :class:`VideoClock` instead of aiortc's 1/30 s per frame;
    - each image queued once (``add_video_frame`` skips the image it was just given): the
      transport's video task sends the latest image at its framerate, up to a frame after the
      audio it goes with began (measured +25..+45 ms at 25 fps); checked 4 times per frame, an
      image leaves within a quarter frame (measured -10..+25 ms at an aiortc peer, -15..+10 ms
      by RTP time) and is still encoded once."""
    if getattr(track, "video_clock", None) is None:
        track.video_clock = VideoClock(track, clock)
        track.next_timestamp = track.video_clock.next_timestamp
        add, last = track.add_video_frame, [None]

        def add_new(frame: Any) -> None:
            if frame is not last[0]:
                last[0] = frame
                add(frame)

        track.add_video_frame = add_new
    return track


class VideoClock:
    """RTP timestamps (90 kHz) for a video track: the time each frame leaves, on ``clock``.

    A replacement for aiortc's ``VideoStreamTrack.next_timestamp``, which adds 1/30 s per frame
    and sleeps to keep 30 fps: frames that come at 25 fps get a clock running 17 % slow, and
    the receiver's lip sync drifts. Here the producer paces (Pipecat's video task), and each
    stamp is its frame's send time, so video and audio keep one clock at any rate."""

    def __init__(self, track: Any, clock: Clock) -> None:
        self.track, self.clock = track, clock
        self._start: int | None = None
        self._last = -1

    async def next_timestamp(self) -> tuple[int, Fraction]:
        if self.track.readyState != "live":
            raise MediaStreamError
        now = self.clock.now_ns()
        if self._start is None:
            self._start = now
        stamp = max((now - self._start) * VIDEO_CLOCK // NS_PER_S, self._last + 1)
        self._last = stamp
        return stamp, VIDEO_TIME_BASE


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
