"""The peer connections behind WHIP and WHEP resources: a publishing session and its viewers.

A WHIP session's own peer connection only receives (the microphone); the avatar it makes goes to
its WHEP viewers, each a peer connection of its own. aiortc hands a track to one sender only, so a
:class:`~aiortc.contrib.media.MediaRelay` reads the session's two tracks once and each viewer
sends proxies of them: the video proxy keeps only the newest frame (a slow viewer skips frames
and never holds the others back), the audio proxy every packet. A viewer's two proxies get each
frame in the same step, so its RTCP sender reports map them onto one clock as for a page
(:mod:`avatar.server.tracks`).

Cost: each viewer has its own video encoder (aiortc encodes per sender; ~4 ms per 512x512 VP8
frame, a tenth of a core at 25 fps), so ``server.limits.whep_viewers`` caps them per session. A
session with no viewer encodes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from avatar.clock import Clock
from avatar.config import ServerConfig
from avatar.errors import RequestError
from avatar.server.ice import add_candidate, rtc_configuration, trickled_candidate
from avatar.server.negotiate import answer_offer, send_avatar
from avatar.server.sdpfrag import SdpFragment, new_etag
from avatar.server.session import Session
from avatar.tasks import cancel, spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")
CONNECT_TIMEOUT_S = 30.0  # a viewer that has not connected by then is closed


@dataclass(slots=True)
class Resource:
    """What a PATCH may change: one peer connection's ICE session (RFC 9725 section 4.3)."""

    pc: RTCPeerConnection
    ufrag: str  # the client's ICE username fragment: another one in a PATCH is an ICE restart
    etag: str = field(default_factory=new_etag)
    candidates: int = 0  # trickled so far

    async def trickle(self, frag: SdpFragment, limit: int) -> None:
        """Add the fragment's candidates (checked as a page's trickled ones are); 422 for an ICE
        restart, which aiortc cannot do."""
        if frag.ufrag is not None and frag.ufrag != self.ufrag:
            raise RequestError("ICE restarts are not supported: DELETE this resource and POST a "
                               "new offer", 422)  # fmt: skip
        for c in frag.candidates:
            ice = trickled_candidate({"candidate": c.text, "sdpMid": c.mid,
                                      "sdpMLineIndex": None if c.mid else c.index})  # fmt: skip
            self.candidates += 1
            if self.candidates > limit:
                raise RequestError(f"too many ICE candidates (at most {limit})")
            if ice is not None and ice.protocol.lower() == "udp":  # others: silently ignored
                await add_candidate(self.pc, ice)
        if frag.end:
            try:
                await self.pc.addIceCandidate(None)
            except Exception as exc:  # a closed connection
                raise RequestError(f"end of candidates refused: {str(exc)[:120]}") from None


async def _pass_over(*tracks: MediaStreamTrack) -> None:
    """Read ``tracks`` until they end (the session closes) and keep nothing."""
    await asyncio.gather(*(_read_all(t) for t in tracks))


async def _read_all(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class Viewer:
    """One WHEP peer connection sending proxies of a session's tracks."""

    def __init__(self, pc: RTCPeerConnection, ufrag: str) -> None:
        self.vid = secrets.token_urlsafe(12)
        self.pc, self.resource = pc, Resource(pc, ufrag)
        self.tracks: list[MediaStreamTrack] = []
        self.closed = asyncio.Event()
        self._expiry: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        await cancel(self._expiry)
        for track in self.tracks:  # leaves the relay (a closed sender does not stop its track)
            track.stop()
        try:
            await self.pc.close()
        except Exception as exc:  # aiortc, on offers it half took: the rest is freed anyway
            log.warning("WHEP viewer %s: closing its peer connection: %r", self.vid, exc)


class Publication:
    """A WHIP session, its resource and its WHEP viewers (see the module docstring)."""

    def __init__(self, session: Session, ufrag: str, cfg: ServerConfig, clock: Clock) -> None:
        self.session, self.cfg, self.clock = session, cfg, clock
        self.resource = Resource(session.pc, ufrag)
        self.relay = MediaRelay()
        self.viewers: dict[str, Viewer] = {}
        # the relay reads the session's tracks from the start, viewers or not: frames made while
        # nobody watches are passed over here, not counted as dropped by a full queue
        idle = [self.relay.subscribe(t, buffered=False) for t in (session.video, session.audio)]
        session.add_task(spawn(_pass_over(*idle), f"whep-idle-{session.sid}"))

    async def add_viewer(self, sdp: str, ufrag: str, now: float) -> tuple[Viewer, str]:
        """A new viewer answering ``sdp`` (a recvonly offer): (the viewer, the answer's SDP)."""
        if self.session.closed.is_set():
            raise RequestError("this session has ended", 404)
        most = self.cfg.limits.whep_viewers
        if len(self.viewers) >= most:
            raise RequestError(f"this session has {most} viewers already (at most {most})", 409,
                               retry_after_s=10)  # fmt: skip
        viewer = Viewer(RTCPeerConnection(rtc_configuration(self.cfg, now)), ufrag)
        self.viewers[viewer.vid] = viewer
        try:
            answer = await answer_offer(viewer.pc, sdp, self.cfg, lambda: self._attach(viewer))
        except BaseException:
            await self.remove(viewer)
            raise
        self._watch(viewer)
        return viewer, answer

    def _attach(self, viewer: Viewer) -> None:
        s = self.session
        video = self.relay.subscribe(s.video, buffered=False)  # the newest frame only
        audio = self.relay.subscribe(s.audio, buffered=True)  # every 20 ms packet
        viewer.tracks += [video, audio]
        send_avatar(viewer.pc, s, self.cfg, (video, audio))

    def _watch(self, viewer: Viewer) -> None:
        @viewer.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = viewer.pc.connectionState
            log.info("session %s: WHEP viewer %s %s", self.session.sid, viewer.vid, state)
            if state in ("failed", "closed"):
                await self.remove(viewer)

        viewer._expiry = spawn(self._expire_unconnected(viewer), f"whep-expire-{viewer.vid}")

    async def _expire_unconnected(self, viewer: Viewer) -> None:
        await self.clock.sleep_until(self.clock.now_ns() + round(CONNECT_TIMEOUT_S * NS_PER_S))
        if viewer.pc.connectionState != "connected":
            log.info("session %s: WHEP viewer %s never connected", self.session.sid, viewer.vid)
            await self.remove(viewer)  # its close() leaves this task to finish

    async def remove(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer.vid, None)
        await viewer.close()

    async def close_viewers(self) -> None:
        await asyncio.gather(*(self.remove(v) for v in list(self.viewers.values())))
