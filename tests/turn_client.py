"""A client run in its own network namespace by ``tests/test_turn.py``: one session through
:class:`AvatarPeer`, then a JSON line on stdout with what came back and the ICE pair used.

    python -m tests.turn_client URL [--turn URL --username U --credential P] [--relay-only]
        [--frames 50] [--connect-timeout 10]

Once connected it waits for ``--frames`` video frames, as many audio packets and a stats
message (not for a time), and reports the frames' timestamps and the server's last counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from avatar.audio.io import iter_audio
from avatar.testing.peer import AvatarPeer
from tests.conftest import WEIGHTS
from tests.timeline import wait_until

SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"


def nominated_pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    """Types and addresses of the ICE pair aioice nominated (aiortc internals: assertion only)."""
    connection = pc.sctp.transport.transport._connection if pc.sctp else None
    pair = connection._nominated.get(1) if connection is not None else None
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    return {
        "local_type": local.type,
        "local": f"{local.host}:{local.port}",
        "remote_type": remote.type,
        "remote": f"{remote.host}:{remote.port}",
    }


def rtc_config(args: argparse.Namespace) -> RTCConfiguration:
    servers = [RTCIceServer(args.turn, args.username, args.credential)] if args.turn else []
    policy = RTCIceTransportPolicy.RELAY if args.relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = np.concatenate(list(iter_audio(SAMPLE, rate=48000, block_s=1.0)))
    peer = AvatarPeer(args.url, speech, rtc_config=rtc_config(args))
    t0 = time.monotonic()
    result: dict[str, Any] = {"connected": False}
    try:
        await peer.connect(timeout_s=args.connect_timeout)
        result["connected"] = True
        result["connect_s"] = round(time.monotonic() - t0, 2)
        result["pair"] = nominated_pair(peer.pc)
        got = peer.received
        result["media"] = await wait_until(
            lambda: len(got.video) >= args.frames and len(got.audio) >= args.frames
            and any(m.get("type") == "stats" for m in got.messages)
        )  # fmt: skip
    except TimeoutError:
        result["error"] = f"not connected after {args.connect_timeout} s"
    finally:
        result["ice_state"] = peer.pc.iceConnectionState
        result["video_frames"] = len(peer.received.video)
        result["audio_frames"] = len(peer.received.audio)
        result["video_pts"] = [pts for _, pts, _ in peer.received.video]
        result["stats"] = [m for m in peer.received.messages if m.get("type") == "stats"][-1:]
        await peer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--turn", default="", help="turn:host:port?transport=udp")
    p.add_argument("--username")
    p.add_argument("--credential")
    p.add_argument("--relay-only", action="store_true")
    p.add_argument("--frames", type=int, default=50, help="video frames to wait for")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
