"""aiortc tracks fed by the engine, and the encoder the offline drivers use in their place.

Both outgoing tracks take their timestamps from the engine's frames: video frame ``k`` has
``pts = k * 90000 / fps`` and the 20 ms audio packets of the same frame start at
``k * 48000 / fps``. Both are handed to aiortc in the same step, so RTCP sender reports map them
onto one wall clock and the browser plays them in sync. Pacing is done by the engine's ticks; the
tracks only wait for their next frame (their queues are small and drop the oldest when full, so
a stalled sender never builds up delay). The engine's render hop has already converted each image
to I420 (:mod:`avatar.render.i420`): the video track wraps the planes on the event loop, and
aiortc's encoder, in its own executor, is the frame's only other thread hop.
"""

from __future__ import annotations

import asyncio
import fractions
from concurrent.futures import Executor
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from avatar.audio.pcm import to_pcm16
from avatar.clock import Clock
from avatar.frames import AudioChunk, VideoFrame
from avatar.observe import NULL_OBSERVER, Observer
from avatar.render.i420 import i420_to_video_frame, rgb_to_i420
from avatar.server.aiortc_hooks import make_encoder
from avatar.units import NS_PER_S, OUTPUT_RATE, PACKET_SAMPLES, VIDEO_CLOCK


def _end(queue: asyncio.Queue[Any]) -> None:
    """Empty ``queue`` and leave the end mark (None) in it: a ``recv()`` waiting on it, or
    coming later, raises :class:`MediaStreamError` (a reader that is not an aiortc sender, such
    as a :class:`~aiortc.contrib.media.MediaRelay`, is not cancelled: it must be woken)."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)


def _put_latest(queue: asyncio.Queue[Any], item: Any) -> bool:
    """Put without waiting; drop the oldest item when full. True if something was dropped."""
    dropped = False
    if queue.full():
        queue.get_nowait()
        dropped = True
    queue.put_nowait(item)
    return dropped


def planes_to_video_frame(i420: np.ndarray, height: int, width: int, pts_ns: int) -> av.VideoFrame:
    """I420 planes (:func:`~avatar.render.i420.rgb_to_i420`) -> an encoder's frame at ``pts_ns``."""
    out = i420_to_video_frame(i420, height, width)
    out.pts = pts_ns * VIDEO_CLOCK // NS_PER_S
    out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    return out


def rgb_to_video_frame(image: np.ndarray, pts_ns: int = 0) -> av.VideoFrame:
    """RGB uint8 -> the encoder's yuv420p at ``pts_ns`` (a frame without planes; benchmarks)."""
    h, w = image.shape[:2]
    return planes_to_video_frame(rgb_to_i420(image), h, w, pts_ns)


class EngineVideoTrack(MediaStreamTrack):
    """The avatar's video: each engine frame's I420 planes, wrapped on the event loop (a frame
    that comes without planes is converted in ``executor``, off the loop). ``last`` and
    ``returned_ns`` name the frame the sender is encoding (for the sender's timing hook)."""

    kind = "video"

    def __init__(self, executor: Executor | None, observer: Observer = NULL_OBSERVER) -> None:
        super().__init__()
        self.executor, self.observer = executor, observer
        self.queue: asyncio.Queue[VideoFrame | None] = asyncio.Queue(2)  # None: stopped
        self.dropped = 0
        self.last: VideoFrame | None = None
        self.returned_ns = 0

    def offer(self, frame: VideoFrame) -> None:
        self.dropped += _put_latest(self.queue, frame)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        i420 = frame.i420
        if i420 is None:  # an engine built without i420: convert off the loop
            picked = self.observer.now()
            loop = asyncio.get_running_loop()
            i420 = await loop.run_in_executor(self.executor, rgb_to_i420, frame.image)
            self.observer.span(frame, "colour", picked, self.observer.now())
        h, w = frame.image.shape[:2]
        out = planes_to_video_frame(i420, h, w, frame.pts_ns)
        self.returned_ns = self.observer.now()
        self.last = frame
        return out

    def stop(self) -> None:
        super().stop()
        _end(self.queue)


class EngineAudioTrack(MediaStreamTrack):
    """The speech, delayed to match the video: each frame's audio as 20 ms packets, paced.

    A frame's packets arrive together; sent back to back, they look like 20 ms of network
    jitter to the browser, whose audio buffer then grows (measured: ~120 ms held in Chromium,
    and the video waits for the audio to stay in sync). Packet ``i`` of a frame therefore leaves
    ``i * 20 ms`` after the frame."""

    kind = "audio"

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        # (release time, packet); None: stopped
        self.queue: asyncio.Queue[tuple[int, av.AudioFrame] | None] = asyncio.Queue(25)  # 0.5 s
        self.dropped = 0

    def offer(self, audio: AudioChunk) -> None:
        now = self.clock.now_ns()
        start = audio.pts_ns * OUTPUT_RATE // NS_PER_S
        pcm = to_pcm16(audio.samples)
        for i in range(0, len(pcm), PACKET_SAMPLES):
            frame = pcm16_frame(pcm[i : i + PACKET_SAMPLES], start + i)
            release = now + i * NS_PER_S // OUTPUT_RATE
            self.dropped += _put_latest(self.queue, (release, frame))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self.queue.get()
        if item is None:
            raise MediaStreamError
        release, frame = item
        await self.clock.sleep_until(release)
        return frame

    def stop(self) -> None:
        super().stop()
        _end(self.queue)


def pcm16_frame(pcm: np.ndarray, pts: int, rate: int = OUTPUT_RATE) -> av.AudioFrame:
    """Mono int16 samples as an audio frame starting at sample ``pts``."""
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


class FrameEncoder:
    """What the video sender does to a frame, without a network: aiortc's own encoder (VP8 by
    default, with the options of :func:`~avatar.server.aiortc_hooks.tune_encoders`) on the
    frame's I420 planes (converted here, as *colour*, if the frame has none), timed for the
    observer; the frame is then done. The profile and capacity drivers use it in place of a peer
    connection."""

    def __init__(self, observer: Observer = NULL_OBSERVER, mime: str = "video/VP8") -> None:
        self.observer = observer
        self._encoder = make_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=VIDEO_CLOCK))

    def encode(self, frame: VideoFrame) -> None:
        obs = self.observer
        i420 = frame.i420
        if i420 is None:
            picked = obs.now()
            i420 = rgb_to_i420(frame.image)
            obs.span(frame, "colour", picked, obs.now())
        h, w = frame.image.shape[:2]
        self.encode_picture(planes_to_video_frame(i420, h, w, frame.pts_ns), frame)

    def encode_picture(self, picture: av.VideoFrame, frame: VideoFrame) -> None:
        """``frame`` as a track handed it to the sender (``picture``), encoded."""
        obs = self.observer
        picked = obs.now()
        self._encoder.encode(picture)
        obs.span(frame, "encode", picked, obs.now())
        obs.done(frame)
