"""``avatar serve`` with real aiortc peers on loopback: media, sync, isolation, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from avatar.audio.io import iter_audio
from avatar.compose.serve import make_server
from avatar.config import Config, load_config
from avatar.face.store import load_avatar
from avatar.server.app import AvatarServer
from avatar.testing.peer import AvatarPeer
from tests.conftest import WEIGHTS
from tests.timeline import assert_accounted, wait_until

SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"
pytestmark = pytest.mark.slow


def speech(seconds: float | None = None) -> np.ndarray:
    x = np.concatenate(list(iter_audio(SAMPLE, rate=48000, block_s=1.0)))
    return x[: round(seconds * 48000)] if seconds else x


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * 48000), np.float32)


@asynccontextmanager
async def running_server(
    *overrides: str, make: Callable[[Config], AvatarServer] = make_server
) -> AsyncIterator[tuple[str, AvatarServer]]:
    cfg: Config = load_config(overrides=["server.ice_hosts=['127.0.0.1']", *overrides])
    server = make(cfg)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)


def mouth_summary(avatar: str, size: int) -> Any:
    """A summarizer: (grey mouth box of the avatar, 64 px thumbnail) per received frame."""
    assets = load_avatar(avatar)
    x0, y0, x1, y1 = (round(v * size / assets.size) for v in assets.info["mouth_box"])
    step = max(size // 64, 1)

    def summary(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grey = rgb[y0:y1, x0:x1].mean(axis=2).astype(np.float32)
        return grey, rgb[::step, ::step].copy()

    return summary


def mouth_activity(video: list[tuple[int, int, Any]], t0_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since t0, mean |mouth box - previous frame's|) per received frame.

    Speech moves the lips every frame; the idle head sway is slow (< 0.3 Hz), so it barely
    changes consecutive frames."""
    times = np.array([(t - t0_ns) / 1e9 for t, _, _ in video])
    crops = np.stack([s[0] for _, _, s in video])
    diff = np.abs(np.diff(crops, axis=0)).mean(axis=(1, 2))
    return times, np.concatenate([[0.0], diff])


def returned_loudness(peer: AvatarPeer, times: np.ndarray, t0_ns: int) -> np.ndarray:
    """RMS of the audio the peer received within 0.15 s of each time (seconds since t0)."""
    a_t = np.array([(t - t0_ns) / 1e9 for t, _, _ in peer.received.audio])
    a_rms = np.array([float(np.sqrt((x**2).mean())) for _, _, x in peer.received.audio])
    return np.array([a_rms[np.abs(a_t - t) < 0.15].max(initial=0.0) for t in times])


def window(times: np.ndarray, values: np.ndarray, a: float, b: float, q: float = 90) -> float:
    return float(np.percentile(values[(times > a) & (times < b)], q))


def has_stats(peer: AvatarPeer) -> bool:
    return any(m.get("type") == "stats" for m in peer.received.messages)


async def stream(peer: AvatarPeer, seconds: float) -> int:
    """Connect, stream for ``seconds``; returns when the first microphone packet left."""
    await peer.connect()
    await asyncio.sleep(seconds)
    assert peer.speech is not None
    return peer.speech.send_times[0]


def test_two_peers_speech_in_lip_synced_avatar_out() -> None:
    audio = np.concatenate([silence(1.5), speech(4.0), silence(2.5)])

    async def run() -> tuple[AvatarPeer, int, list[dict[str, Any]]]:
        async with running_server() as (url, server):
            peer = AvatarPeer(url, audio, summarize=mouth_summary("default", 512))
            t0 = await stream(peer, 8.5)
            await peer.close()
            for _ in range(50):
                if not server.sessions:
                    break
                await asyncio.sleep(0.1)
            assert not server.sessions, "the session was not freed after the peer left"
            return peer, t0, peer.received.messages

    peer, t0, messages = asyncio.run(run())
    video, audio_in = peer.received.video, peer.received.audio
    assert_accounted(video, messages, min_span_s=6.0)
    assert {v[2][1].shape for v in video} == {(64, 64, 3)}  # 512x512 frames
    times, mouth = mouth_activity(video, t0)
    speaking, resting = window(times, mouth, 2.3, 5.3), window(times, mouth, 7.3, 9.0)
    before = window(times, mouth, 0.3, 1.4)
    assert speaking > 4 * max(resting, 0.5) and speaking > 3 * before, (speaking, resting, before)
    # the returned audio is the speech, delayed: loud in the middle, quiet at both ends
    a_t = np.array([(t - t0) / 1e9 for t, _, _ in audio_in])
    a_rms = np.array([float(np.sqrt((x**2).mean())) for _, _, x in audio_in])
    assert a_rms[(a_t > 2.5) & (a_t < 5.0)].mean() > 20 * a_rms[a_t > 7.3].mean() + 1e-4
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "ready" and "speech_start" in kinds and "speech_end" in kinds
    stats = [m for m in messages if m["type"] == "stats"][-1]
    assert stats["latency_ms"]["p50"] is not None and stats["frames"] > 150


def test_three_sessions_with_different_avatars_and_audio_never_cross() -> None:
    size = 256
    plans = {  # avatar, audio: speech early / none / speech late
        "a": ("default", np.concatenate([silence(1.0), speech(3.0), silence(6.0)])),
        "b": ("carphone", silence(10.0)),
        "c": ("carphone", np.concatenate([silence(4.0), speech(3.0), silence(3.0)])),
    }

    async def run() -> dict[str, tuple[AvatarPeer, int]]:
        async with running_server(f"render.size={size}") as (url, server):
            peers = {
                k: AvatarPeer(url, audio, avatar=av, summarize=mouth_summary(av, size))
                for k, (av, audio) in plans.items()
            }
            await asyncio.gather(*(p.connect() for p in peers.values()))
            assert len(server.sessions) == 3
            await asyncio.sleep(10.0)
            # each peer's timeline starts with its first microphone packet
            starts = {k: p.speech.send_times[0] for k, p in peers.items() if p.speech}
            await asyncio.gather(*(p.close() for p in peers.values()))
            return {k: (p, starts[k]) for k, p in peers.items()}

    result = asyncio.run(run())
    portraits = {}
    for name in ("default", "carphone"):
        p = load_avatar(name).portrait
        portraits[name] = p[:: p.shape[0] // 64, :: p.shape[0] // 64].astype(np.float32)
    for key, (avatar, _) in plans.items():
        peer, t0 = result[key]
        video = peer.received.video
        # 3 sessions + 3 client peers share 2 cores in this process: frames may be late or
        # dropped, but each one is on the timeline or counted by the server
        assert_accounted(video, peer.received.messages, min_span_s=7.0)
        thumb = video[-1][2][1].astype(np.float32)
        err = {n: float(np.abs(thumb - p).mean()) for n, p in portraits.items()}
        assert min(err, key=err.__getitem__) == avatar, (key, err)  # its own face, nobody else's
        # the mouth follows the speech this session got back (its own, delayed), nobody else's
        times, mouth = mouth_activity(video, t0)
        loud = returned_loudness(peer, times, t0)
        talking, quiet = mouth[loud > 0.01], mouth[loud < 0.001]
        if key == "b":
            assert len(talking) == 0 and np.percentile(quiet, 90) < 3.0, key
        else:
            assert len(talking) > 30 and len(quiet) > 30, (key, len(talking), len(quiet))
            ratio = np.percentile(talking, 90) / max(np.percentile(quiet, 90), 0.5)
            assert ratio > 3.0, (key, ratio)
        rms = np.array([float(np.sqrt((x**2).mean())) for _, _, x in peer.received.audio])
        if key == "b":
            assert rms.max() < 1e-3  # silence in, silence out: nobody else's speech
        else:  # 3 s of its own speech came back, not 6 s of two people's
            assert 1.0 < (rms > 0.01).sum() * 0.02 < 3.3, (key, (rms > 0.01).sum() * 0.02)


def test_bad_requests_get_clear_errors_and_others_keep_streaming() -> None:
    async def run() -> None:
        async with running_server() as (url, server):
            good = AvatarPeer(url, speech(3.0))
            await good.connect()
            before = len(good.received.video)
            async with aiohttp.ClientSession() as http:

                async def post(body: Any, raw: bool = False) -> tuple[int, str]:
                    data = body if raw else json.dumps(body)
                    headers = {"Content-Type": "application/json"}
                    async with http.post(f"{url}/offer", data=data, headers=headers) as r:
                        return r.status, (await r.json())["error"]

                assert (await post("{not json", raw=True))[0] == 400
                status, err = await post({"sdp": "v=0\r\nm=garbage\r\n", "type": "offer"})
                assert status == 400 and "SDP" in err
                status, err = await post({"sdp": "hello", "type": "answer"})
                assert status == 400 and "offer" in err
                offer = {"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "type": "offer"}
                status, err = await post({**offer, "avatar": "/etc"})
                assert status == 404 and "unknown avatar" in err
                async with http.get(f"{url}/ws/audio?session={good.session}") as r:  # no key
                    assert r.status == 404 and "no such session" in (await r.json())["error"]
                async with http.get(f"{url}/api/avatars") as r:
                    assert "carphone" in (await r.json())["avatars"]
            # unaffected: new frames keep coming, each missing one counted by the server
            more = await wait_until(
                lambda: len(good.received.video) > before + 15 and has_stats(good)
            )
            assert more, f"the good session stopped streaming at {len(good.received.video)}"
            assert_accounted(good.received.video, good.received.messages)
            assert len(server.sessions) == 1, server.sessions  # failed offers left nothing
            await good.close()

    asyncio.run(run())


def test_websocket_pcm_drives_a_session_without_microphone() -> None:
    tts = speech(3.0)[::3].copy()  # as 16 kHz PCM from a text-to-speech engine

    async def run() -> AvatarPeer:
        async with running_server() as (url, _server):
            peer = AvatarPeer(url, None, summarize=mouth_summary("default", 512))
            await peer.connect()
            t0 = peer.clock.now_ns()
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(peer.socket_url("/ws/audio")) as ws,
            ):
                await asyncio.sleep(1.0)
                await ws.send_str(json.dumps({"type": "format", "sample_rate": 16000}))
                pcm = (tts * 32767).astype("<i2").tobytes()
                for i in range(0, len(pcm), 16000):  # 0.5 s blocks: faster than real time
                    await ws.send_bytes(pcm[i : i + 16000])
                await ws.send_bytes(b"\x01")  # half a sample: refused, stream goes on
                reply = await ws.receive_json(timeout=5)
                assert reply["type"] == "error" and "whole" in reply["message"]
                await asyncio.sleep(4.5)
            peer.received.messages.append({"type": "t0", "ns": t0})
            await peer.close()
            return peer

    peer = asyncio.run(run())
    t0 = peer.received.messages[-1]["ns"]
    times, mouth = mouth_activity(peer.received.video, t0)
    speaking, after = window(times, mouth, 1.5, 3.8), window(times, mouth, 4.8, 5.6)
    assert speaking > 5 * max(after, 0.05), (speaking, after)
    assert_accounted(peer.received.video, peer.received.messages, min_span_s=4.0)


def profiles(peer: AvatarPeer) -> list[dict[str, Any]]:
    return [m for m in peer.received.messages if m["type"] == "profile"]


def speaking_frames(peer: AvatarPeer) -> list[dict[str, Any]]:
    """The profiled frames the motion model analysed (speech)."""
    msgs = peer.received.messages
    frames = [f for m in msgs if m["type"] == "profile_frames" for f in m["frames"]]
    return [f for f in frames if "motion" in f["stages"]]


def test_profile_mode_times_every_stage_up_to_the_wire() -> None:
    async def run() -> AvatarPeer:
        async with running_server("server.profile=true", "engine.sync_marker=true") as (url, _):
            peer = AvatarPeer(url, np.concatenate([silence(1.0), speech(3.0)]),
                              summarize=lambda rgb: bool(rgb[2:22, 2:22].mean() > 200),
                              subscribe={"profile_frames": True})  # fmt: skip
            await peer.connect()
            # until three reports, 20 speaking frames and a marked frame came (not for 5 s)
            await wait_until(
                lambda: len(profiles(peer)) >= 3 and len(speaking_frames(peer)) > 20
                and any(marked for _, _, marked in peer.received.video)
            )  # fmt: skip
            await peer.close()
            return peer

    peer = asyncio.run(run())
    msgs = peer.received.messages
    ready = next(m for m in msgs if m["type"] == "ready")
    assert ready["profile"] is True and ready["marker"]["size"] > 0
    live = profiles(peer)
    assert len(live) >= 3 and live[-1]["stages"]["render"]["p50"] > 0
    speaking = speaking_frames(peer)
    assert len(speaking) > 20
    for f in speaking[-10:]:
        assert {"vad", "features", "motion", "render", "colour", "encode", "send"} <= set(
            f["stages"]
        )
        assert {"inbox", "ready", "out"} <= set(f["waits"]) and f["latency_ms"] > 0
        assert f["starts"]["colour"] < f["emit_ms"]  # in the render hop, not the video track
    assert any(marked for _, _, marked in peer.received.video)  # loud frames carry the marker


def blendshapes(peer: AvatarPeer) -> list[dict[str, Any]]:
    return [m for m in peer.received.messages if m["type"] == "blendshapes"]


def test_ice_hosts_and_port_range_shape_the_answer_and_blendshapes_stream() -> None:
    async def run() -> tuple[str, AvatarPeer]:
        async with running_server("server.udp_ports=[41230, 41250]") as (url, _):
            audio = np.concatenate([silence(0.5), speech(2.0)])
            peer = AvatarPeer(url, audio, summarize=lambda _: None, subscribe={"blendshapes": True})
            await peer.connect()
            answer = peer.pc.remoteDescription.sdp
            # until the engine's media time passed the speech (0.5-2.5 s), not for 3 s
            await wait_until(lambda: any(m.get("pts_ms", 0) > 2600 for m in blendshapes(peer)))
            await peer.close()
            return answer, peer

    answer, peer = asyncio.run(run())
    candidates = [line.split() for line in answer.splitlines() if line.startswith("a=candidate")]
    assert candidates
    for c in candidates:  # foundation component transport priority address port typ host
        assert c[4] == "127.0.0.1" and 41230 <= int(c[5]) <= 41250, c
    shapes = blendshapes(peer)
    assert len(shapes) > 40 and all(len(m["values"]) == 16 for m in shapes)
    assert max(m["values"][0] for m in shapes) > 0.2  # jawOpen moves with the speech
    assert [m["frame"] for m in shapes] == sorted(m["frame"] for m in shapes)
