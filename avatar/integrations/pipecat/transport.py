"""Transport settings for the avatar, and SmallWebRTC's video track fitted to it (see the
package docstring)."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

from aiortc.mediastreams import MediaStreamError
from pipecat.transports.base_transport import TransportParams

from avatar.clock import Clock, MonotonicClock
from avatar.config import Config
from avatar.units import NS_PER_S, VIDEO_CLOCK

log = logging.getLogger("avatar.pipecat")
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
VIDEO_CHECKS = 4  # SmallWebRTC: the video task looks for a new image 4 times per frame


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
