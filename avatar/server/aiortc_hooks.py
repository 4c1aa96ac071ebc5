"""Every use of aiortc's and aioice's private internals, in one place.

aiortc (pinned at 1.16.0) has no settings for what these do; each hook names the internal it
relies on, and :func:`check_hooks` verifies all of them against the installed versions (the server
runs it at start, ``tests/test_aiortc_hooks.py`` in CI), so an upgrade that moves an internal
fails loudly instead of silently measuring or configuring something else.

- :func:`shorten_audio_jitter_buffer`: ``RTCRtpReceiver.__jitter_buffer`` (name-mangled), which
  holds 4 incoming audio packets (80 ms) before decoding.
- :func:`time_sender`: ``RTCRtpSender._next_encoded_frame(codec)``, wrapped to time encode/send.
- :func:`configure_ice`: ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`` (which skips
  127.0.0.1) and the ``asyncio`` module aioice binds its UDP sockets through (for a port range).
  aiortc builds its ``aioice.Connection`` objects itself, so these are process-wide (one server
  per process).
- :func:`watch_inbound`: ``RTCIceTransport._connection`` (the ``aioice.Connection``) and its
  ``data_received(data, component)``, which aioice's protocol calls for every non-STUN datagram.
- :func:`tune_encoders` / :func:`make_encoder`: ``aiortc.rtcrtpsender.get_encoder`` (how a sender
  makes its encoder) and the ``codec`` context aiortc's VP8 and H264 encoders create on their
  first frame and give their ``options`` to before it opens.
- :func:`negotiate_playout_delay` / :func:`send_playout_delay`: ``aiortc.codecs.HEADER_EXTENSIONS``
  (the extensions aiortc offers and accepts, process-wide) and ``RTCRtpSender``'s
  ``__rtp_header_extensions_map`` (name-mangled), whose ``set(values)`` packs every packet's
  header extensions.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import types
from collections.abc import Callable
from typing import Any

import aioice.ice
import aiortc.codecs
import aiortc.rtcrtpsender
from aiortc import MediaStreamTrack, RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    pack_header_extensions,
    unpack_header_extensions,
)

from avatar.clock import Clock
from avatar.config import EncoderConfig, ServerConfig
from avatar.errors import AvatarError, ConfigError
from avatar.frames import VideoFrame
from avatar.observe import Observer

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
ICE_CONNECTION_ATTR = "_connection"
SENDER_NEXT_FRAME = "_next_encoded_frame"
SENDER_EXTENSIONS_ATTR = "_RTCRtpSender__rtp_header_extensions_map"
PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
PLAYOUT_DELAY_ID = 6  # the id we offer (aiortc's own use 1-3); an answer keeps the offer's
_stock_get_host_addresses = aioice.ice.get_host_addresses
_stock_get_encoder = aiortc.codecs.get_encoder


class HookError(AvatarError):
    """aiortc or aioice changed underneath one of our hooks."""


def check_hooks() -> None:
    """Raise :class:`HookError` if an internal a hook relies on is gone or changed shape."""
    checks = (_check_receiver, _check_sender, _check_ice, _check_inbound, _check_extensions,
              _check_encoders)  # fmt: skip
    problems = [p for p in (check() for check in checks) if p]
    if problems:
        raise HookError("aiortc/aioice internals changed: " + "; ".join(problems))


def _check_receiver() -> str | None:
    src = inspect.getsource(RTCRtpReceiver.__init__)
    if "self.__jitter_buffer = JitterBuffer(" not in src:
        return f"RTCRtpReceiver no longer builds {JITTER_BUFFER_ATTR}"
    params = inspect.signature(JitterBuffer.__init__).parameters
    if not {"capacity", "prefetch"} <= set(params):
        return "JitterBuffer(capacity, prefetch) changed"
    return None


def _check_sender() -> str | None:
    method = getattr(RTCRtpSender, SENDER_NEXT_FRAME, None)
    if method is None or not inspect.iscoroutinefunction(method):
        return f"RTCRtpSender.{SENDER_NEXT_FRAME} is gone or not a coroutine"
    if list(inspect.signature(method).parameters) != ["self", "codec"]:
        return f"RTCRtpSender.{SENDER_NEXT_FRAME}(codec) changed its parameters"
    if f"self.{SENDER_NEXT_FRAME}(" not in inspect.getsource(RTCRtpSender):
        return f"RTCRtpSender no longer calls {SENDER_NEXT_FRAME}"
    return None


def _check_ice() -> str | None:
    params = list(inspect.signature(_stock_get_host_addresses).parameters)
    if params != ["use_ipv4", "use_ipv6"]:
        return "aioice.ice.get_host_addresses(use_ipv4, use_ipv6) changed"
    src = inspect.getsource(aioice.ice)
    if "get_host_addresses(" not in src.split("def get_host_addresses", 1)[1]:
        return "aioice.ice no longer calls get_host_addresses"
    if "asyncio.get_running_loop()" not in src or "create_datagram_endpoint(" not in src:
        return "aioice.ice no longer binds sockets through asyncio.get_running_loop()"
    return None


def _check_inbound() -> str | None:
    if f"self.{ICE_CONNECTION_ATTR} = " not in inspect.getsource(RTCIceTransport.__init__):
        return f"RTCIceTransport no longer keeps its aioice Connection as {ICE_CONNECTION_ATTR}"
    if "self.receiver.data_received(" not in inspect.getsource(aioice.ice.StunProtocol):
        return "aioice's StunProtocol no longer calls receiver.data_received"
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


def _check_encoders() -> str | None:
    if getattr(aiortc.rtcrtpsender, "get_encoder", None) not in (_stock_get_encoder, make_encoder):
        return "aiortc.rtcrtpsender no longer makes encoders with codecs.get_encoder"
    for cls, call in ((Vp8Encoder, "encode"), (H264Encoder, "_encode_frame")):
        src = inspect.getsource(getattr(cls, call))
        if "self.codec = av.CodecContext.create(" not in src or "self.codec.options = {" not in src:
            return f"{cls.__name__} no longer sets its codec context's options when it opens"
    return None


# -- the incoming audio buffer --------------------------------------------------------------


def shorten_audio_jitter_buffer(pc: Any, track: MediaStreamTrack, packets: int) -> None:
    """aiortc holds 4 incoming audio packets (80 ms) before decoding; use ``packets`` instead.

    The engine has its own playout queue, so the receiver only needs to reorder. The receiver of
    ``track`` in ``pc`` gets a new buffer before media flows."""
    for t in pc.getTransceivers():
        if t.receiver.track is track:
            if not hasattr(t.receiver, JITTER_BUFFER_ATTR):
                raise HookError(f"RTCRtpReceiver has no {JITTER_BUFFER_ATTR}")
            setattr(t.receiver, JITTER_BUFFER_ATTR, JitterBuffer(capacity=16, prefetch=packets))


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


# -- encoder settings ------------------------------------------------------------------------

_tuning: dict[str, dict[str, str]] = {}  # mime type (lower case) -> options over aiortc's


class _TunedContext:
    """A codec context whose ``options`` always include ``tuning`` (aiortc sets them once,
    before the context opens); everything else goes to the context itself."""

    __slots__ = ("_ctx", "_tuning")

    def __init__(self, ctx: Any, tuning: dict[str, str]) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_tuning", tuning)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._tuning}
        setattr(self._ctx, name, value)


def _tuned_class(base: type[Encoder]) -> type[Encoder]:
    class Tuned(base):  # type: ignore[valid-type,misc]
        def __init__(self, tuning: dict[str, str]) -> None:
            self.tuning = tuning
            super().__init__()

        @property
        def codec(self) -> Any:
            return self.__dict__.get("_tuned_codec")

        @codec.setter
        def codec(self, ctx: Any) -> None:
            tuned = ctx if ctx is None else _TunedContext(ctx, self.tuning)
            self.__dict__["_tuned_codec"] = tuned

    Tuned.__name__ = f"Tuned{base.__name__}"
    return Tuned


_TUNED = {"video/vp8": _tuned_class(Vp8Encoder), "video/h264": _tuned_class(H264Encoder)}


def make_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """aiortc's encoder for ``codec``, with the options :func:`tune_encoders` set."""
    mime = codec.mimeType.lower()
    tuning = _tuning.get(mime)
    if not tuning or mime not in _TUNED:
        return _stock_get_encoder(codec)
    return _TUNED[mime](dict(tuning))  # type: ignore[call-arg]


def tune_encoders(cfg: EncoderConfig) -> None:
    """Encoders made from now on (process-wide) take these libvpx / libx264 options over
    aiortc's (which are tuned for camera video: a denoiser, x264's default preset)."""
    _tuning.clear()
    _tuning.update({"video/vp8": dict(cfg.vp8), "video/h264": dict(cfg.h264)})
    aiortc.rtcrtpsender.get_encoder = make_encoder


# -- ICE: host addresses and a UDP port range -------------------------------------------------


class _PortRangeLoop:
    """The running loop, except that UDP sockets asked for port 0 get one from the range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: itertools.cycle[int], n: int):
        self._loop, self._ports, self._n = loop, ports, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self, factory: Any, local_addr: Any = None, **kw: Any
    ) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kw)
        for _ in range(self._n):
            port = next(self._ports)
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, local_addr=(local_addr[0], port), **kw
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(
            errno.EADDRINUSE, f"no free UDP port left in the ICE range on {local_addr[0]}"
        )


def configure_ice(cfg: ServerConfig) -> None:
    """Apply ``cfg.ice_hosts`` and ``cfg.udp_ports`` to every connection made from now on."""
    hosts = list(cfg.ice_hosts)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if hosts:
            return [h for h in hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]
        return _stock_get_host_addresses(use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = host_addresses
    if cfg.udp_ports is None:
        aioice.ice.asyncio = asyncio
        return
    lo, hi = cfg.udp_ports
    if not 1024 <= lo <= hi <= 65535:
        raise ConfigError(f"server.udp_ports {lo}-{hi}: need 1024 <= low <= high <= 65535")
    ports = itertools.cycle(range(lo, hi + 1))
    shim = types.ModuleType("asyncio")
    shim.__dict__.update(asyncio.__dict__)
    shim.get_running_loop = lambda: _PortRangeLoop(  # type: ignore[attr-defined]
        asyncio.get_running_loop(), ports, hi - lo + 1
    )
    aioice.ice.asyncio = shim


# -- how fast a vanished peer is noticed ------------------------------------------------------


def watch_inbound(pc: Any, clock: Clock) -> Callable[[], int]:
    """A function giving the clock time the peer last sent anything (RTP, RTCP, DTLS, SCTP).

    aioice notices a vanished peer through failed consent checks, one unretried request every
    ~5 s, 6 failures (~30 s). Faster consent settings also drop live peers whose replies are
    late on a loaded server (seen with 4 sessions on 2 busy cores). A live peer sends many
    packets a second (RTCP receiver reports for our video at least), so silence is the better
    signal: the session closes when it has lasted ``server.reap_s``. Each ``aioice.Connection``
    of ``pc`` gets its ``data_received`` wrapped (``RTCIceTransport._connection``)."""
    last = [clock.now_ns()]
    for conn in _ice_connections(pc):
        original = conn.data_received

        def received(data: bytes, component: int, original: Any = original) -> None:
            last[0] = clock.now_ns()
            original(data, component)

        conn.data_received = received
    return lambda: last[0]


def _ice_connections(pc: Any) -> list[Any]:
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    found: dict[int, Any] = {}
    for dtls in transports:
        conn = getattr(getattr(dtls, "transport", None), ICE_CONNECTION_ATTR, None)
        if conn is None:
            raise HookError(f"RTCIceTransport has no {ICE_CONNECTION_ATTR}")
        found[id(conn)] = conn
    return list(found.values())


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
