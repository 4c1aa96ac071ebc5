"""``say``: text in, the avatar speaks it, with real festival speech and a real aiortc peer.

What the peer receives is judged against what the synthesiser made for the same text: the
received audio's loudness envelope matches festival's own (so it is that speech, in order, whole),
the lips move while it plays and rest after, ``clear`` silences it at once, and bad text gets an
error while the session goes on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pytest

from avatar.data import tts
from avatar.testing.peer import AvatarPeer
from tests.test_server import mouth_activity, mouth_summary, running_server, silence, window
from tests.timeline import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tts.installed_voices(), reason="festival voices are not installed"),
]
TEXT = "Hello there. I am the avatar, and I read aloud what you type to me."
LONG = " ".join(["This sentence goes on for a while, so that it can be cut short."] * 6)
WIN = 960  # 20 ms at 48 kHz
VOICED_RMS = 0.01
FRAME_S = 0.04


def festival_speech(text: str) -> np.ndarray:
    """What the session should say for ``text``: its sentences from the same festival process
    (the first one's leading pause trimmed), at 48 kHz."""
    sentences = tts.split_sentences(tts.clean_text(text, 10_000))
    pieces = [tts.say_sentence(s) for s in sentences]
    pieces[0] = tts.trim_start(pieces[0])
    audio, rate = np.concatenate([p.audio for p in pieces]), pieces[0].rate
    t = np.arange(round(len(audio) * 48000 / rate)) * rate / 48000
    return np.interp(t, np.arange(len(audio)), audio).astype(np.float32)


def envelope(x: np.ndarray) -> np.ndarray:
    n = len(x) // WIN
    return np.sqrt((x[: n * WIN].reshape(n, WIN) ** 2).mean(axis=1))


def received_since(peer: AvatarPeer, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(arrival seconds after ``t_ns``, samples) of the audio received after ``t_ns``."""
    packets = [(t, x) for t, _, x in peer.received.audio if t >= t_ns]
    times = np.concatenate([np.full(len(x), (t - t_ns) / 1e9) for t, x in packets])
    return times, np.concatenate([x for _, x in packets])


def best_match(got: np.ndarray, want: np.ndarray) -> tuple[float, int]:
    """Correlation of two loudness envelopes at the best lag (in 20 ms windows), and the lag."""
    best = (-1.0, 0)
    for lag in range(len(got) - len(want) + 1):
        r = float(np.corrcoef(got[lag : lag + len(want)], want)[0, 1])
        best = max(best, (r, lag))
    return best


async def connected(peer: AvatarPeer) -> None:
    """Connected, with the control channel open (the server's ``ready`` came)."""
    await peer.connect()
    await wait_until(lambda: any(m.get("type") == "ready" for m in peer.received.messages))


def errors(peer: AvatarPeer) -> list[str]:
    return [m["message"] for m in peer.received.messages if m.get("type") == "error"]


async def say_and_clear(url: str) -> dict[str, Any]:
    peer = AvatarPeer(url, None, summarize=mouth_summary("default", 512))
    await connected(peer)
    assert peer.channel is not None
    channel, clock = peer.channel, peer.clock
    await wait_until(lambda: len(peer.received.video) >= 25)  # idle, listening
    for bad in ({"type": "say", "text": ""}, {"type": "say", "text": "bell\x07 rings"},
                {"type": "say", "text": "hi", "voice": "nobody"}, {"type": "say", "text": 3},
                {"type": "say", "text": "x" * 200_000}):  # fmt: skip
        channel.send(json.dumps(bad))
    await wait_until(lambda: len(errors(peer)) >= 5)
    t_say = clock.now_ns()
    channel.send(json.dumps({"type": "say", "text": TEXT}))
    want = festival_speech(TEXT)
    await asyncio.sleep(len(want) / 48000 + 2.0)
    t_long = clock.now_ns()
    channel.send(json.dumps({"type": "say", "text": LONG}))
    await wait_until(lambda: voiced_after(peer, t_long) > 1.5)
    t_clear = clock.now_ns()
    channel.send(json.dumps({"type": "clear"}))
    await asyncio.sleep(1.5)
    async with aiohttp.ClientSession() as http, http.ws_connect(peer.socket_url("/ws")) as ws:
        t_again = clock.now_ns()
        await ws.send_str(json.dumps({"type": "say", "text": "Still here.", "voice": "kal"}))
        await wait_until(lambda: voiced_after(peer, t_again) > 0.3)
        await asyncio.sleep(0.5)
    await peer.close()
    return {"peer": peer, "want": want, "t_say": t_say, "t_clear": t_clear}


def voiced_after(peer: AvatarPeer, t_ns: int) -> float:
    """Seconds of voiced audio (20 ms windows above VOICED_RMS) received after ``t_ns``."""
    got = [x for t, _, x in peer.received.audio if t >= t_ns]
    return float((envelope(np.concatenate(got)) > VOICED_RMS).sum()) * 0.02 if got else 0.0


def test_say_speaks_festival_speech_with_moving_lips_and_clear_stops_it() -> None:
    async def run() -> dict[str, Any]:
        async with running_server() as (url, _server):
            return await say_and_clear(url)

    r = asyncio.run(run())
    peer, want, t_say, t_clear = r["peer"], r["want"], r["t_say"], r["t_clear"]
    # bad text: one clear error each, and the session went on (everything below)
    said = errors(peer)
    assert any("nothing to speak" in e for e in said), said
    assert any("control characters (U+0007)" in e for e in said), said
    assert any("unknown voice 'nobody'" in e for e in said), said
    assert any("string 'text'" in e for e in said), said
    assert any("bytes refused" in e for e in said), said
    assert len(said) == 5, said

    # the received audio is festival's speech of TEXT: its loudness envelope, whole and in order
    times, audio = received_since(peer, t_say)
    got, ref = envelope(audio[times < len(want) / 48000 + 2.0]), envelope(want)
    r_env, lag = best_match(got, ref)
    assert r_env > 0.9, r_env
    voiced = np.flatnonzero(got > VOICED_RMS)
    first_audio_s = times[voiced[0] * WIN]
    assert abs(len(voiced) - int((ref > VOICED_RMS).sum())) <= 0.1 * len(voiced)

    # the lips move while it plays and rest after it
    mt, mouth = mouth_activity(peer.received.video, t_say)
    end_s = times[voiced[-1] * WIN]
    speaking = window(mt, mouth, first_audio_s + 0.2, end_s - 0.2)
    before = window(mt, mouth, -0.8, -0.1)
    after = window(mt, mouth, end_s + 0.6, end_s + 1.6)
    assert speaking > 5 * max(before, after, 0.05), (speaking, before, after)
    first_move = mt[(mt > 0) & (mouth > 5 * max(before, 0.05))][0]

    # clear: no more than two frames (and the packet on the wire) of speech after it was sent
    after_clear = voiced_after(peer, t_clear) - voiced_after(peer, t_clear + 1_400_000_000)
    assert after_clear <= 2 * FRAME_S + 0.02, after_clear
    ct, cmouth = mouth_activity(peer.received.video, t_clear)
    assert window(ct, cmouth, 0.3, 1.3) < 0.5 * speaking
    print(f"\nsay -> first voiced audio {first_audio_s * 1000:.0f} ms, first moving frame "
          f"{first_move * 1000:.0f} ms; envelope r {r_env:.3f} at {lag * 20} ms; "
          f"voiced after clear {after_clear * 1000:.0f} ms")  # fmt: skip


def test_say_on_a_microphone_session_is_refused() -> None:
    async def run() -> list[str]:
        async with running_server() as (url, _server):
            peer = AvatarPeer(url, silence(5.0))
            await connected(peer)
            assert peer.channel is not None
            peer.channel.send(json.dumps({"type": "say", "text": "Hello."}))
            await wait_until(lambda: bool(errors(peer)))
            await peer.close()
            return errors(peer)

    said = asyncio.run(run())
    assert len(said) == 1 and "takes its audio from the microphone" in said[0], said
