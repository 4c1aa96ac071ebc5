"""A session's SDP answer: an offer taken, what the peer gets decided, the answer made.

Three kinds of peer connection answer offers (see :mod:`avatar.server.whip`): a page's (the avatar
back, the microphone in), a WHIP publisher's (the microphone in, nothing back) and a WHEP
viewer's (the avatar of a WHIP session, nothing in). :func:`answer_offer` does what they share;
:func:`send_avatar` and :func:`receive_microphone_only` are what differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from avatar.config import ServerConfig
from avatar.errors import RequestError
from avatar.server.aiortc_hooks import send_playout_delay, time_sender
from avatar.server.ice import rewrite_candidates
from avatar.server.session import Session


async def answer_offer(
    pc: RTCPeerConnection, sdp: str, cfg: ServerConfig, media: Callable[[], None]
) -> str:
    """``pc`` takes the offer ``sdp``, ``media()`` adds or declines tracks, ``pc`` answers: the
    answer's SDP (with ``server.ice_public_ip`` in its candidates). An offer aiortc refuses or
    cannot answer is a :class:`RequestError` (400)."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
    except Exception as exc:  # aiortc raises ValueError and others on SDP it cannot take
        raise RequestError(f"SDP offer refused: {str(exc)[:160]}") from None
    media()
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # an offer aiortc took but cannot answer
        raise RequestError(f"SDP offer cannot be answered: {str(exc)[:160]}") from None
    return rewrite_candidates(drop_redundant_candidates(pc.localDescription.sdp), cfg.ice_public_ip)


_SRFLX_AT_BASE = re.compile(  # address, port, then the same as raddr and rport
    r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ srflx raddr \1 rport \2\b.*\r?\n", re.MULTILINE
)


def drop_redundant_candidates(sdp: str) -> str:
    """Without the server-reflexive candidates that are their own base (RFC 8445 section 5.1.3:
    redundant). A STUN server that sees this host without NAT gives them; aioice keeps them, and
    a peer then pairs one address twice (libnice, seen to abort on it now and then)."""
    return _SRFLX_AT_BASE.sub("", sdp)


def send_avatar(
    pc: RTCPeerConnection,
    session: Session,
    cfg: ServerConfig,
    tracks: tuple[MediaStreamTrack, MediaStreamTrack] | None = None,
) -> None:
    """``pc`` sends the avatar of ``session``: its video and audio tracks (or ``tracks``,
    relayed copies of them), the video sender timed for the session's observer and marked with
    the playout delay. The offer must receive both."""
    kinds = {t.kind for t in pc.getTransceivers()}
    if "video" not in kinds:
        raise RequestError("the offer must receive video: addTransceiver('video')")
    if "audio" not in kinds:
        raise RequestError("the offer must have an audio transceiver (sendrecv or recvonly)")
    video, audio = tracks or (session.video, session.audio)
    video_sender = pc.addTrack(video)
    pc.addTrack(audio)
    time_sender(video_sender, session.video, session.observer)  # which frame: the source's
    if cfg.playout_delay_ms is not None:
        send_playout_delay(video_sender, *cfg.playout_delay_ms)


def receive_microphone_only(pc: RTCPeerConnection, sdp: str) -> None:
    """A publisher's offer (WHIP): its audio is the microphone and nothing is sent back; any
    video it offers is declined (``inactive``: the avatar only listens)."""
    if not sends_audio(sdp):
        raise RequestError("the offer must send audio (an audio section with a=sendonly or "
                           "a=sendrecv): it is the avatar's microphone")  # fmt: skip
    for t in pc.getTransceivers():
        if t.kind == "video":
            t.direction = "inactive"


def sends_audio(sdp: str) -> bool:
    """Whether an offer (already parsed once by aiortc) has an audio section it sends."""
    media = SessionDescription.parse(sdp).media
    return any(m.kind == "audio" and m.port and (m.direction or "sendrecv") in ("sendonly",
               "sendrecv") for m in media)  # fmt: skip
