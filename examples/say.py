"""Make a running ``avatar serve`` say text, from Python, and keep what came back.

    avatar serve                                            # in another terminal
    python examples/say.py "Hello! I read aloud what you type." --out said

Opens a session with ``"audio": "none"`` over WebRTC (an aiortc peer, as a page would), sends
one ``say`` on its data channel, and records the avatar's video and audio until it has been quiet
for a second: ``said.wav`` (the speech as received), ``said.png`` (the frame at the loudest
moment), and how long the first sound and the first moving frame took. In a page the same is
``AvatarClient.connect({audio: 'none'})`` then ``avatar.say(text)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
from PIL import Image

from avatar.data.tts import write_wave
from avatar.testing.peer import AvatarPeer


async def say(url: str, text: str, voice: str) -> AvatarPeer:
    peer = AvatarPeer(url, None, summarize=lambda rgb: rgb)  # keep whole frames
    await peer.connect()
    while not any(m.get("type") == "ready" for m in peer.received.messages):
        await asyncio.sleep(0.05)  # the data channel is open
    assert peer.channel is not None
    peer.received.messages.append({"type": "said", "ns": peer.clock.now_ns()})
    peer.channel.send(json.dumps({"type": "say", "text": text, "voice": voice}))
    heard = False
    while True:  # until a second of quiet after the speech
        await asyncio.sleep(1.0)
        recent = [x for _, _, x in peer.received.audio[-50:]]
        loud = bool(recent) and float(np.abs(np.concatenate(recent)).max()) > 0.01
        if heard and not loud:
            break
        heard = heard or loud
    await peer.close()
    return peer


def report(peer: AvatarPeer, out: Path) -> None:
    errors = [m["message"] for m in peer.received.messages if m.get("type") == "error"]
    if errors:
        raise SystemExit(f"the server said: {errors[0]}")
    t0 = next(m["ns"] for m in peer.received.messages if m.get("type") == "said")
    audio = [(t, x) for t, _, x in peer.received.audio if t >= t0]
    speech = np.concatenate([x for _, x in audio])
    write_wave(out.with_suffix(".wav"), speech, 48000)
    first_sound = next(t for t, x in audio if np.abs(x).max() > 0.01)
    loudest = max(audio, key=lambda a: float(np.abs(a[1]).mean()))[0]
    frame = min(peer.received.video, key=lambda v: abs(v[0] - loudest))[2]
    Image.fromarray(frame).save(out.with_suffix(".png"))
    print(f"{len(speech) / 48000:.1f} s of speech -> {out.with_suffix('.wav')}, "
          f"{out.with_suffix('.png')}; first sound {(first_sound - t0) / 1e6:.0f} ms "
          "after the say")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("text")
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--voice", default="slt", help="slt (default), kal or ked")
    ap.add_argument("--out", type=Path, default=Path("said"))
    args = ap.parse_args()
    report(asyncio.run(say(args.url, args.text, args.voice)), args.out)


if __name__ == "__main__":
    main()
