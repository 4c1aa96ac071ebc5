"""Every private aiortc/aioice internal we hook still exists and still does what we rely on.

If one of these fails after an aiortc or aioice upgrade, read avatar/server/aiortc_hooks.py:
the hook must be rewritten for the new internals (the server refuses to start until it is).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender

from avatar.clock import MonotonicClock
from avatar.frames import FrameTiming, VideoFrame
from avatar.profile.profiler import Profiler
from avatar.server import aiortc_hooks
from avatar.server.aiortc_hooks import (
    JITTER_BUFFER_ATTR,
    HookError,
    check_hooks,
    shorten_audio_jitter_buffer,
    time_sender,
)
from avatar.server.tracks import EngineVideoTrack


def test_the_pinned_aiortc_has_every_internal_we_hook() -> None:
    assert importlib.metadata.version("aiortc") == "1.16.0"  # pyproject pins it: see the hooks
    check_hooks()


def test_check_fails_loudly_when_an_internal_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpSender, "_next_encoded_frame")
    with pytest.raises(HookError, match="_next_encoded_frame"):
        check_hooks()
    monkeypatch.undo()
    monkeypatch.setattr(aiortc_hooks, "_stock_get_host_addresses", lambda ipv4: [])
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
