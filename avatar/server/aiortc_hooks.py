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
- :func:`configure_consent`: ``aioice.ice.CONSENT_INTERVAL`` and ``CONSENT_FAILURES`` (how soon
  a vanished peer is given up).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import itertools
import types
from typing import Any

import aioice.ice
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from avatar.config import ServerConfig
from avatar.errors import AvatarError, ConfigError
from avatar.frames import VideoFrame
from avatar.observe import Observer

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
SENDER_NEXT_FRAME = "_next_encoded_frame"
_stock_get_host_addresses = aioice.ice.get_host_addresses


class HookError(AvatarError):
    """aiortc or aioice changed underneath one of our hooks."""


def check_hooks() -> None:
    """Raise :class:`HookError` if an internal a hook relies on is gone or changed shape."""
    problems = [p for p in (_check_receiver(), _check_sender(), _check_ice(), _check_consent())
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


def _check_consent() -> str | None:
    src = inspect.getsource(aioice.ice.Connection.query_consent)
    if "CONSENT_INTERVAL" not in src or "CONSENT_FAILURES" not in src:
        return "aioice's consent checks no longer read CONSENT_INTERVAL/CONSENT_FAILURES"
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

CONSENT_FAILURES = 4


def configure_consent(reap_s: float) -> None:
    """aioice sends an ICE consent check every ~5 s and gives up after 6 failures (~30 s): a
    peer that vanished (no close, no FIN) holds its session that long. Check every
    ``reap_s / 6`` s and give up after 4 failures: ~``0.7 * reap_s`` plus the checks' own
    timeouts. (Module constants of ``aioice.ice``; process-wide like :func:`configure_ice`.)"""
    for name in ("CONSENT_FAILURES", "CONSENT_INTERVAL"):
        if not isinstance(getattr(aioice.ice, name, None), int | float):
            raise HookError(f"aioice.ice.{name} is gone: cannot shorten ICE consent")
    aioice.ice.CONSENT_FAILURES = CONSENT_FAILURES
    setattr(aioice.ice, "CONSENT_INTERVAL", reap_s / 6)  # noqa: B010 (an int there; floats work)
