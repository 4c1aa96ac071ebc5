"""A live stream judged on its media timeline and the server's own counts, not on the machine.

A loaded machine renders late and drops frames, by design: the engine skips the ticks it missed
and a full queue drops its oldest frame, and the server counts each such decision in its
``stats`` messages (``late``, ``dropped``). So the tests of real sessions check:

- the timestamps: every received frame sits on the 25 fps grid, after the previous one;
- the accounting: every grid slot between the first and last received frame was received or
  counted by the server, and every frame the engine emitted reached the peer or was counted as
  dropped (a few allowed for what is in flight or lost on the wire);
- the extent, where a test needs it: the media time the frames cover (it advances with the
  server's clock whether or not the machine keeps up);

and they wait for what they need (so many frames, a model call, a message) with a generous
safety limit instead of sleeping a fixed time and counting what came meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar.units import VIDEO_CLOCK

TICK = VIDEO_CLOCK // 25  # one 25 fps frame in RTP video units (90 kHz)
# Frames neither received nor counted: a loss on the loopback now and then (aiortc retransmits
# lost video packets), and at the end those still in the sender's queue or on the wire.
LOSS = 0.01
IN_FLIGHT = 5
SAFETY_S = 30.0  # how long a wait may take before the test fails (never reached when it passes)

Video = Sequence[tuple[int, int, Any]]  # (arrival ns, pts, summary), as AvatarPeer keeps them


@dataclass(frozen=True, slots=True)
class Timeline:
    """What a peer received, on the 25 fps grid, with the server's last counts."""

    received: int
    slots: int  # grid slots from the first received frame to the last, both included
    largest_gap: int  # most slots between two received frames (1: none missing)
    emitted: int  # frames the engine made, by the last stats message
    late: int  # ticks the engine missed (no frame has their timestamps)
    dropped: int  # frames dropped from full queues before they were sent

    @property
    def span_s(self) -> float:
        """Media seconds from the first received frame to the last."""
        return (self.slots - 1) * TICK / VIDEO_CLOCK

    @property
    def largest_gap_s(self) -> float:
        """The longest hole in the media timeline between two received frames."""
        return self.largest_gap * TICK / VIDEO_CLOCK

    @property
    def unaccounted_slots(self) -> int:
        """Grid slots with no frame that the server did not count either."""
        return self.slots - self.received - self.late - self.dropped

    @property
    def lost(self) -> int:
        """Frames the engine emitted and did not drop that never reached the peer (the frames
        emitted after the last stats message make this negative)."""
        return self.emitted - self.dropped - self.received


def last_stats(messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    stats = [m for m in messages if m.get("type") == "stats"]
    assert stats, "the session sent no stats message"
    return stats[-1]


def timeline(video: Video, messages: Sequence[dict[str, Any]]) -> Timeline:
    """The received frames on the grid (asserted: in order, on the grid), the last counts."""
    assert len(video) >= 2, f"{len(video)} frames received"
    pts = np.array([p for _, p, _ in video], np.int64)
    steps = np.diff(pts)
    assert np.all(steps > 0) and np.all(steps % TICK == 0), f"off the grid: {steps[:20]}"
    stats = last_stats(messages)
    return Timeline(
        len(pts), int((pts[-1] - pts[0]) // TICK + 1), int(steps.max() // TICK),
        int(stats["frames"]), int(stats["late"]), int(stats["dropped"]),
    )  # fmt: skip


def assert_accounted(
    video: Video, messages: Sequence[dict[str, Any]], min_span_s: float = 0.0
) -> Timeline:
    """Frames on the grid; each missing one counted by the server; ``min_span_s`` covered."""
    t = timeline(video, messages)
    assert t.unaccounted_slots <= 1 + LOSS * t.slots, f"slots missing and not counted: {t}"
    assert t.lost <= IN_FLIGHT + LOSS * t.slots, f"frames lost between engine and peer: {t}"
    assert t.span_s >= min_span_s, f"the frames cover {t.span_s:.2f} s, not {min_span_s} s: {t}"
    return t


async def wait_until(done: Callable[[], bool], limit_s: float = SAFETY_S) -> bool:
    """Poll ``done`` until it holds; False after ``limit_s`` (a safety limit, not a timing
    assertion: the caller asserts the result, and a passing test never gets near it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not done():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True
