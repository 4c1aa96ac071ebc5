"""Text in -> speech and moving lips out: how soon, through a real server and aiortc peer.

    python scripts/bench_say.py [--texts 8]

One ``avatar serve`` (in process, loopback) and one aiortc peer with ``"audio": "none"``. The peer
sends ``say`` with a sentence, waits for it to be spoken, and repeats with the next. Per say:
first audio sample received, first voiced 20 ms (RMS > 0.01), first frame whose mouth moves (5 x
the idle change before the say), all on the peer's clock from the moment ``say`` was sent. Then
the synthesis alone: a sentence through the long-lived festival process (what ``say`` uses)
against a festival run per sentence (what ``speak`` does for a job), on the same sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from avatar.compose.profile import machine
from avatar.data import tts
from avatar.testing.peer import AvatarPeer
from tests.test_say import VOICED_RMS, WIN, connected, envelope, received_since
from tests.test_server import mouth_activity, mouth_summary, running_server

TEXTS = [
    "Hello there, how can I help you today?",
    "Sure, I can do that for you.",
    "The weather tomorrow looks sunny, with a light breeze.",
    "Please hold on while I look that up.",
    "Your order was shipped this morning.",
    "I am sorry, I did not catch that.",
    "Maybe we could meet at the station at nine.",
    "Thanks for calling, and have a wonderful evening.",
]


async def one_say(peer: AvatarPeer, text: str) -> dict[str, float]:
    assert peer.channel is not None
    t0 = peer.clock.now_ns()
    peer.channel.send(json.dumps({"type": "say", "text": text}))
    await asyncio.sleep(tts.say_sentence(text).duration_s + 1.2)
    times, audio = received_since(peer, t0)
    level = envelope(audio)
    mt, mouth = mouth_activity(peer.received.video, t0)
    idle = np.percentile(mouth[(mt > -0.9) & (mt < -0.05)], 90)
    moving = mt[(mt > 0) & (mouth > 5 * max(idle, 0.05))]
    return {
        "first_audio_ms": 1000 * times[np.flatnonzero(np.abs(audio) > 1e-3)[0]],
        "first_voiced_ms": 1000 * times[np.flatnonzero(level > VOICED_RMS)[0] * WIN],
        "first_moving_frame_ms": 1000 * float(moving[0]),
    }


async def serve_and_say(texts: list[str]) -> list[dict[str, float]]:
    async with running_server() as (url, _server):
        peer = AvatarPeer(url, None, summarize=mouth_summary("default", 512))
        await connected(peer)
        await asyncio.sleep(1.5)  # the voice's festival process starts with the session
        rows = [await one_say(peer, text) for text in texts]
        await peer.close()
        return rows


def synthesis_ms(texts: list[str]) -> dict[str, float]:
    """Median ms per sentence: the long-lived process against a festival run each."""
    tts.say_sentence("Warm up.")
    piped, runs = [], []
    for text in texts:
        t = time.perf_counter()
        tts.say_sentence(text)
        piped.append(time.perf_counter() - t)
        t = time.perf_counter()
        tts.speak(text)
        runs.append(time.perf_counter() - t)
    return {"pipe_ms": 1000 * float(np.median(piped)), "run_ms": 1000 * float(np.median(runs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=len(TEXTS))
    texts = TEXTS[: ap.parse_args().texts]
    rows = asyncio.run(serve_and_say(texts))
    synth = synthesis_ms(texts)
    print(f"machine: {machine()}; {len(rows)} says, 512 px, 25 fps, VP8, loopback")
    for key in rows[0]:
        v = np.array([r[key] for r in rows])
        print(f"  say -> {key[:-3]:<20} p50 {np.median(v):6.0f} ms  max {v.max():6.0f} ms")
    pipe, run = synth["pipe_ms"], synth["run_ms"]
    print(f"  festival per sentence: long-lived process {pipe:.0f} ms, a run each {run:.0f} ms "
          f"({run / pipe:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
