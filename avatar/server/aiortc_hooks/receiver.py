"""Hooks on the receiving side: aiortc's audio jitter buffer, and when the peer last sent anything.

- :func:`shorten_audio_jitter_buffer`: ``RTCRtpReceiver.__jitter_buffer`` (name-mangled), which
  holds 4 incoming audio packets (80 ms) before decoding.
- :func:`watch_inbound`: ``RTCIceTransport._connection`` (the ``aioice.Connection``) and its
  ``data_received(data, component)``, which aioice's protocol calls for every non-STUN datagram.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import aioice.ice
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from avatar.clock import Clock
from avatar.errors import HookError

JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
ICE_CONNECTION_ATTR = "_connection"


def _check_receiver() -> str | None:
    src = inspect.getsource(RTCRtpReceiver.__init__)
    if "self.__jitter_buffer = JitterBuffer(" not in src:
        return f"RTCRtpReceiver no longer builds {JITTER_BUFFER_ATTR}"
    params = inspect.signature(JitterBuffer.__init__).parameters
    if not {"capacity", "prefetch"} <= set(params):
        return "JitterBuffer(capacity, prefetch) changed"
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
