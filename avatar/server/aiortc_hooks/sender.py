"""Hooks on the video sender: encode and send times, and the playout-delay header extension.

- :func:`time_sender`: ``RTCRtpSender._next_encoded_frame(codec)``, wrapped to time encode/send.
- :func:`negotiate_playout_delay` / :func:`send_playout_delay`: ``aiortc.codecs.HEADER_EXTENSIONS``
  (the extensions aiortc offers and accepts, process-wide) and ``RTCRtpSender``'s
  ``__rtp_header_extensions_map`` (name-mangled), whose ``set(values)`` packs every packet's
  header extensions.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiortc.codecs
from aiortc import RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    pack_header_extensions,
    unpack_header_extensions,
)

from avatar.errors import ConfigError, HookError
from avatar.frames import VideoFrame
from avatar.observe import Observer

SENDER_NEXT_FRAME = "_next_encoded_frame"
SENDER_EXTENSIONS_ATTR = "_RTCRtpSender__rtp_header_extensions_map"
PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
PLAYOUT_DELAY_ID = 6  # the id we offer (aiortc's own use 1-3); an answer keeps the offer's


def _check_sender() -> str | None:
    method = getattr(RTCRtpSender, SENDER_NEXT_FRAME, None)
    if method is None or not inspect.iscoroutinefunction(method):
        return f"RTCRtpSender.{SENDER_NEXT_FRAME} is gone or not a coroutine"
    if list(inspect.signature(method).parameters) != ["self", "codec"]:
        return f"RTCRtpSender.{SENDER_NEXT_FRAME}(codec) changed its parameters"
    if f"self.{SENDER_NEXT_FRAME}(" not in inspect.getsource(RTCRtpSender):
        return f"RTCRtpSender no longer calls {SENDER_NEXT_FRAME}"
    return None


def _check_extensions() -> str | None:
    table = getattr(aiortc.codecs, "HEADER_EXTENSIONS", None)
    if not isinstance(table, dict) or "video" not in table:
        return "aiortc.codecs.HEADER_EXTENSIONS is gone"
    src = inspect.getsource(RTCRtpSender)
    if "self.__rtp_header_extensions_map.configure(" not in src:
        return f"RTCRtpSender no longer configures {SENDER_EXTENSIONS_ATTR}"
    if "packet.serialize(self.__rtp_header_extensions_map)" not in src:
        return "RTCRtpSender no longer packs its packets' extensions through its map"
    if list(inspect.signature(HeaderExtensionsMap.set).parameters) != ["self", "values"]:
        return "HeaderExtensionsMap.set(values) changed"
    return None


# -- encode and send times of the video sender ------------------------------------------------


def time_sender(sender: RTCRtpSender, track: Any, observer: Observer) -> None:
    """Time encode and send of every frame ``track`` hands ``sender`` (profiling).

    aiortc encodes inside ``_next_encoded_frame`` (``track.recv()``, then the encoder in its
    executor) and sends the packets before asking for the next frame: *encode* runs from the
    track handing the frame over (``track.returned_ns``) to the encoded payloads, *send* from
    there to the sender's next request. The frame is then done (``observer.done``). ``track``
    names the frame being encoded as ``track.last``."""
    original = getattr(sender, SENDER_NEXT_FRAME, None)
    if original is None or not callable(original):
        raise HookError(f"RTCRtpSender has no {SENDER_NEXT_FRAME}: profiling needs it")
    pending: list[tuple[VideoFrame, int]] = []

    async def timed(codec: Any) -> Any:
        now = observer.now()
        if pending:
            sent, encoded = pending.pop()
            observer.span(sent, "send", encoded, now)
            observer.done(sent)
        result = await original(codec)
        frame = track.last
        if frame is not None and result is not None:
            done = observer.now()
            observer.span(frame, "encode", track.returned_ns, done)
            pending.append((frame, done))
            track.last = None
        return result

    setattr(sender, SENDER_NEXT_FRAME, timed)


# -- render as soon as possible: the playout-delay header extension ---------------------------


def negotiate_playout_delay(delay_ms: tuple[int, int] | None) -> None:
    """Offer and accept the playout-delay extension on video from now on (process-wide), unless
    ``delay_ms`` is None; a (min, max) the extension cannot carry is a :class:`ConfigError`.

    aiortc answers only with the extensions in its own table; Chrome offers this one on video
    and honours it: ``min = max = 0`` renders each frame as soon as it is decoded instead of
    smoothing playout with a jitter-buffer delay."""
    if delay_ms is not None:
        playout_delay_bytes(*delay_ms)
    video = aiortc.codecs.HEADER_EXTENSIONS["video"]
    video[:] = [x for x in video if x.uri != PLAYOUT_DELAY_URI]
    if delay_ms is not None:
        video.append(RTCRtpHeaderExtensionParameters(id=PLAYOUT_DELAY_ID, uri=PLAYOUT_DELAY_URI))


def playout_delay_bytes(min_ms: int, max_ms: int) -> bytes:
    """The extension's 3 bytes: 12-bit minimum and maximum delay, in 10 ms units."""
    lo, hi = min_ms // 10, max_ms // 10
    if not 0 <= lo <= hi <= 0xFFF:
        raise ConfigError(f"playout delay {min_ms}-{max_ms} ms: need 0 <= min <= max <= 40950")
    return bytes([lo >> 4, ((lo & 0xF) << 4) | (hi >> 8), hi & 0xFF])


class _PlayoutDelayMap(HeaderExtensionsMap):
    """aiortc's extension map plus the playout delay, on every packet once negotiated."""

    def __init__(self, value: bytes) -> None:
        super().__init__()
        self.value, self.id = value, 0

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        for ext in parameters.headerExtensions:
            if ext.uri == PLAYOUT_DELAY_URI:
                self.id = ext.id

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        profile, packed = super().set(values)
        if not self.id:
            return profile, packed
        return pack_header_extensions(
            [*unpack_header_extensions(profile, packed), (self.id, self.value)]
        )


def send_playout_delay(sender: RTCRtpSender, min_ms: int, max_ms: int) -> None:
    """Put the playout delay ``min_ms``-``max_ms`` on ``sender``'s packets when the peer
    negotiated it (call before the session's description is applied)."""
    if not hasattr(sender, SENDER_EXTENSIONS_ATTR):
        raise HookError(f"RTCRtpSender has no {SENDER_EXTENSIONS_ATTR}")
    setattr(sender, SENDER_EXTENSIONS_ATTR, _PlayoutDelayMap(playout_delay_bytes(min_ms, max_ms)))


def read_playout_delay(packet: bytes, ext_id: int) -> tuple[int, int] | None:
    """The (min, max) ms a raw RTP packet carries in extension ``ext_id``, if any (tests)."""
    if not packet[0] & 0x10:
        return None
    at = 12 + 4 * (packet[0] & 0x0F)
    profile, words = int.from_bytes(packet[at : at + 2]), int.from_bytes(packet[at + 2 : at + 4])
    for x_id, v in unpack_header_extensions(profile, packet[at + 4 : at + 4 + 4 * words]):
        if x_id == ext_id and len(v) == 3:
            lo, hi = (v[0] << 4) | (v[1] >> 4), ((v[1] & 0xF) << 8) | v[2]
            return 10 * lo, 10 * hi
    return None
