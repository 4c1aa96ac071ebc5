"""Every private aiortc/aioice internal we hook still exists and still does what we rely on.

If one of these fails after an aiortc or aioice upgrade, read avatar/server/aiortc_hooks/:
the hook must be rewritten for the new internals (the server refuses to start until it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCSessionDescription
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCCertificate, generate_certificate
from aiortc.rtcrtpsender import RTCRtpSender
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from avatar.clock import MonotonicClock
from avatar.errors import ConfigError
from avatar.frames import FrameTiming, VideoFrame
from avatar.profile.profiler import Profiler
from avatar.server import aiortc_hooks
from avatar.server.aiortc_hooks import (
    JITTER_BUFFER_ATTR,
    PLAYOUT_DELAY_URI,
    HookError,
    accept_rsa_dtls,
    check_hooks,
    dtls,
    playout_delay_bytes,
    read_playout_delay,
    shorten_audio_jitter_buffer,
    time_sender,
)
from avatar.server.tracks import EngineVideoTrack
from avatar.testing.peer import AvatarPeer
from tests.timeline import wait_until


def test_the_pinned_aiortc_has_every_internal_we_hook() -> None:
    assert importlib.metadata.version("aiortc") == "1.16.0"  # pyproject pins it: see the hooks
    check_hooks()


def test_check_fails_loudly_when_an_internal_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpSender, "_next_encoded_frame")
    with pytest.raises(HookError, match="_next_encoded_frame"):
        check_hooks()
    monkeypatch.undo()
    monkeypatch.setattr(aiortc_hooks.ice, "_stock_get_host_addresses", lambda ipv4: [])
    with pytest.raises(HookError, match="get_host_addresses"):
        check_hooks()


def test_the_receivers_audio_buffer_is_replaced() -> None:
    async def run() -> tuple[Any, Any]:
        sender, receiver = RTCPeerConnection(), RTCPeerConnection()
        sender.addTransceiver("audio", direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        tracks: list[Any] = []
        receiver.on("track", tracks.append)
        await receiver.setRemoteDescription(sender.localDescription)
        rx = receiver.getTransceivers()[0].receiver
        stock = getattr(rx, JITTER_BUFFER_ATTR)
        shorten_audio_jitter_buffer(receiver, tracks[0], 0)
        replaced = getattr(rx, JITTER_BUFFER_ATTR)
        await sender.close()
        await receiver.close()
        return stock, replaced

    stock, replaced = asyncio.run(run())
    assert stock._prefetch == 4  # aiortc's 80 ms hold
    assert replaced is not stock and replaced._prefetch == 0 and replaced._capacity == 16


def test_the_sender_hook_times_encode_and_send_of_real_frames() -> None:
    async def run() -> Profiler:
        clock = MonotonicClock()
        profiler = Profiler(clock, 25.0, "s")
        track = EngineVideoTrack(None, profiler)
        pc = RTCPeerConnection()
        sender = pc.addTrack(track)
        time_sender(sender, track, profiler)
        codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        for i in range(3):
            image = np.full((64, 64, 3), 40 * i, np.uint8)
            timing = FrameTiming(i, 0, 0, 0, clock.now_ns(), clock.now_ns(), clock.now_ns())
            track.offer(VideoFrame(i, i * 40_000_000, image, timing=timing))
            encoded = await sender._next_encoded_frame(codec)  # the internal the hook wraps
            assert encoded is not None and encoded.payloads
        await pc.close()
        return profiler

    profiler = asyncio.run(run())
    done = profiler.records  # a frame is done when the sender asks for the next one
    assert [r.index for r in done] == [0, 1]
    for r in done:
        assert {"colour", "encode", "send"} <= set(r.stages) and "out" in r.waits
        assert all(v >= 0 for v in r.stages.values())


def test_playout_delay_bytes_round_trip() -> None:
    from aiortc.rtp import RtpPacket

    for lo, hi in [(0, 0), (0, 100), (40, 40950)]:
        packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2)
        table = aiortc_hooks.sender._PlayoutDelayMap(playout_delay_bytes(lo, hi))
        table.configure(_params_with(PLAYOUT_DELAY_URI, 6))
        assert read_playout_delay(packet.serialize(table), 6) == (lo, hi)
    with pytest.raises(ConfigError):
        playout_delay_bytes(50, 10)
    with pytest.raises(ConfigError, match="playout delay"):  # at start, not at an offer
        aiortc_hooks.negotiate_playout_delay((0, 50_000))


def _params_with(uri: str, ext_id: int) -> Any:
    from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    return RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(ext_id, uri)])


@pytest.mark.slow
def test_playout_delay_is_negotiated_and_on_every_video_packet() -> None:
    """A real server and aiortc peer: the answer accepts the offer's playout-delay extension
    for video only, and every video packet the peer receives carries min = max = 0."""
    from tests.test_server import running_server, speech

    async def run(*overrides: str) -> tuple[str, list[tuple[int, Any]]]:
        async with running_server("render.size=256", *overrides) as (url, _):
            peer = AvatarPeer(url, speech(3.0), summarize=lambda _: None)
            answer = await peer.send_offer()
            seen: list[tuple[int, Any]] = []  # (payload type, playout delay) per packet
            ext_id = _extmap_id(answer["sdp"], PLAYOUT_DELAY_URI) or 6
            dtls = peer.pc.getTransceivers()[0].receiver.transport
            original = dtls._handle_rtp_data

            async def record(data: bytes, arrival_time_ms: int) -> None:
                seen.append((data[1] & 0x7F, read_playout_delay(data, ext_id)))
                await original(data, arrival_time_ms)

            video_pt = _payload_type(answer["sdp"], "video")
            with patch.object(dtls, "_handle_rtp_data", record):
                await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
                await asyncio.wait_for(peer.connected.wait(), 20)
                # a second of video packets (not a second of this machine's time)
                await wait_until(lambda: sum(pt == video_pt for pt, _ in seen) > 25)
                await peer.close()
            return answer["sdp"], seen

    sdp, seen = asyncio.run(run())
    video_pt, audio_pt = _payload_type(sdp, "video"), _payload_type(sdp, "audio")
    video = [d for pt, d in seen if pt == video_pt]
    audio = [d for pt, d in seen if pt == audio_pt]
    assert _extmap_id(sdp.split("m=video")[1], PLAYOUT_DELAY_URI)
    assert PLAYOUT_DELAY_URI not in sdp.split("m=video")[0]  # not on audio
    assert len(video) > 25 and set(video) == {(0, 0)}
    assert audio and set(audio) == {None}

    sdp, seen = asyncio.run(run("server.playout_delay_ms=null"))
    assert PLAYOUT_DELAY_URI not in sdp and seen and {d for _, d in seen} == {None}


def _extmap_id(sdp: str, uri: str) -> int | None:
    for line in sdp.splitlines():
        if line.startswith("a=extmap:") and line.endswith(" " + uri):
            return int(line[len("a=extmap:") :].split()[0].split("/")[0])
    return None


def _payload_type(sdp: str, kind: str) -> int:
    media = sdp.split(f"m={kind}")[1].splitlines()[0]
    return int(media.split()[2])


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
def test_tuned_encoders_give_the_codec_our_options_over_aiortcs(mime: str) -> None:
    import aiortc.rtcrtpsender

    from avatar.config import EncoderConfig
    from avatar.server.aiortc_hooks import make_encoder, tune_encoders
    from avatar.server.tracks import rgb_to_video_frame

    cfg = EncoderConfig()
    tune_encoders(cfg)
    assert aiortc.rtcrtpsender.get_encoder is make_encoder  # what every sender now calls
    codec = RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)
    encoder = make_encoder(codec)
    assert isinstance(encoder, Vp8Encoder | H264Encoder)
    given: list[dict[str, str]] = []
    # the property aiortc's `self.codec = ...` goes through
    ctx_class = inspect.getattr_static(encoder, "codec")
    yy, xx = np.mgrid[:128, :128]
    for i in range(5):
        image = np.stack([(xx + 9 * i) % 256, yy, (xx + yy) % 256], -1).astype(np.uint8)
        payloads, _ = encoder.encode(rgb_to_video_frame(image, i * 40_000_000))
        tuned: Any = encoder.codec  # our wrapper of aiortc's context, which only it has _tuning
        if i == 0:
            given.append(dict(tuned._tuning))
        assert payloads
    ours = cfg.vp8 if mime == "video/VP8" else cfg.h264
    assert isinstance(ctx_class, property) and given == [ours]
    # the codec opened and took every option we gave (what it did not take stays listed)
    assert encoder.codec is not None
    left = encoder.codec.options
    assert encoder.codec.is_open and not set(ours) & set(left)


def test_a_tuned_context_merges_our_options_over_the_ones_aiortc_sets() -> None:
    class Ctx:
        def __init__(self) -> None:
            self.options: dict[str, str] = {}
            self.width = 0

    ctx = Ctx()
    tuned = aiortc_hooks.encoders._TunedContext(ctx, {"cpu-used": "-12"})
    tuned.options = {"cpu-used": "-6", "deadline": "realtime"}
    tuned.width = 64
    assert ctx.options == {"cpu-used": "-12", "deadline": "realtime"} and ctx.width == 64


# -- DTLS with a peer whose certificate is RSA (GStreamer's webrtcbin) ------------------------


def _rsa_dtls_server() -> SSL.Connection:
    """A DTLS server as webrtcbin is one: an RSA certificate, OpenSSL's default cipher list."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(generate_certificate(key))  # type: ignore[arg-type]  # RSA is fine
    ctx.use_privatekey(key)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    server = SSL.Connection(ctx)
    server.set_accept_state()
    return server


def _dtls_handshake(client: SSL.Connection, server: SSL.Connection) -> str | None:
    """Both ends of a handshake over memory BIOs; the cipher agreed, or None."""
    done = {id(client): False, id(server): False}
    for _ in range(20):
        for a, b in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                a.do_handshake()
                done[id(a)] = True
            with contextlib.suppress(SSL.WantReadError):
                b.bio_write(a.bio_read(65536))
        if all(done.values()):
            return client.get_cipher_name()
    return None


def test_aiortc_answering_as_dtls_client_accepts_an_rsa_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RTCCertificate, "_create_ssl_context", dtls._stock_context)
    ours = RTCCertificate.generateCertificate()  # aiortc's own: ECDSA

    def client() -> SSL.Connection:
        conn = SSL.Connection(ours._create_ssl_context([SRTP_AES128_CM_SHA1_80]))
        conn.set_connect_state()
        return conn

    with pytest.raises(SSL.Error, match="no shared cipher"):  # stock aiortc 1.16
        _dtls_handshake(client(), _rsa_dtls_server())
    accept_rsa_dtls()
    check_hooks()  # the hooked factory passes the check too
    assert _dtls_handshake(client(), _rsa_dtls_server()) == "ECDHE-RSA-AES128-GCM-SHA256"
    assert dtls.ECDSA_SUITES in dtls.DTLS_CIPHERS  # aiortc's own suites are still offered first


def test_the_dtls_check_fails_when_the_context_factory_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dtls, "_stock_context", lambda self, profiles, extra: None)
    monkeypatch.setattr(RTCCertificate, "_create_ssl_context", dtls._stock_context)
    with pytest.raises(HookError, match="_create_ssl_context"):
        check_hooks()
