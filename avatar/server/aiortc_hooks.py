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
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from avatar.clock import Clock
from avatar.config import ServerConfig
from avatar.errors import AvatarError, ConfigError
from avatar.frames import VideoFrame
from avatar.observe import Observer

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
ICE_CONNECTION_ATTR = "_connection"
SENDER_NEXT_FRAME = "_next_encoded_frame"
_stock_get_host_addresses = aioice.ice.get_host_addresses


class HookError(AvatarError):
    """aiortc or aioice changed underneath one of our hooks."""


def check_hooks() -> None:
    """Raise :class:`HookError` if an internal a hook relies on is gone or changed shape."""
    problems = [p for p in (_check_receiver(), _check_sender(), _check_ice(), _check_inbound())
                if p]  # fmt: skip
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
