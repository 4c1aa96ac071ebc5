"""A client of a node pool that keeps the avatar on screen when its node goes away.

:class:`RoamingPeer` holds one :class:`~avatar.testing.peer.AvatarPeer` at a time and places a
new one (a new offer through the gateway, which picks another node) when the server tells it to
move (a ``shutdown`` or ``move`` message: the node drains), when its video stops for ``stall_s``
(the node died), or when its connection fails. Make before break: the old session is closed only
once the new one has shown a frame. Every move is kept (:class:`Move`) with its times, for tests
and ``scripts/bench_cluster.py``. What the JS client does in the browser
(``avatar/web/avatar-client.js``, option ``roam``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from avatar.clock import Clock, sleep_for
from avatar.tasks import cancel, spawn
from avatar.testing.peer import AvatarPeer
from avatar.units import NS_PER_S

MOVE_MESSAGES = ("shutdown", "move")


@dataclass(slots=True)
class Move:
    reason: str  # told, stalled, failed
    trigger_ns: int  # when the client decided to move (its clock)
    old_session: str
    new_session: str = ""
    first_frame_ns: int = 0  # the new session's first video frame
    last_old_frame_ns: int = 0  # the old session's last video frame before the switch


class RoamingPeer:
    """See the module docstring; ``make()`` builds a fresh peer for the same gateway."""

    def __init__(
        self, make: Callable[[], AvatarPeer], clock: Clock, stall_s: float = 1.5,
        connect_s: float = 30.0, check_s: float = 0.05,
    ) -> None:  # fmt: skip
        self.make, self.clock = make, clock
        self.stall_ns, self.connect_s, self.check_s = round(stall_s * NS_PER_S), connect_s, check_s
        self.peer: AvatarPeer | None = None
        self.retired: list[AvatarPeer] = []  # earlier peers (their frames stay readable)
        self.moves: list[Move] = []
        self._seen_messages = 0
        self._since = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.peer = await self._connect()
        self._since = self.clock.now_ns()
        self._task = spawn(self._watch(), "roaming-peer")

    async def close(self) -> None:
        await cancel(self._task)
        if self.peer is not None:
            await self.peer.close()

    @property
    def sessions(self) -> list[str]:
        return [p.session for p in [*self.retired, *([self.peer] if self.peer else [])]]

    def frame_times(self) -> list[int]:
        """Arrival times of every video frame shown, whichever session brought it, in order."""
        peers = [*self.retired, *([self.peer] if self.peer else [])]
        return sorted(t for p in peers for t, _, _ in p.received.video)

    async def _connect(self) -> AvatarPeer:
        """A new session; offers refused (all full, Redis away) are tried again."""
        while True:
            peer = self.make()
            try:
                await peer.connect(timeout_s=self.connect_s)
                return peer
            except (RuntimeError, TimeoutError, aiohttp.ClientError, OSError):
                await peer.close()
                await sleep_for(self.clock, 0.25)

    async def _watch(self) -> None:
        while True:
            reason = self._trigger()
            if reason is not None:
                await self._move(reason)
            await sleep_for(self.clock, self.check_s)

    def _trigger(self) -> str | None:
        peer = self.peer
        assert peer is not None
        if peer.pc.connectionState in ("failed", "closed"):
            return "failed"
        messages = peer.received.messages
        told = any(m.get("type") in MOVE_MESSAGES for m in messages[self._seen_messages :])
        self._seen_messages = len(messages)
        if told:
            return "told"
        last = peer.received.video[-1][0] if peer.received.video else self._since
        return "stalled" if self.clock.now_ns() - last > self.stall_ns else None

    async def _move(self, reason: str) -> None:
        old = self.peer
        assert old is not None
        move = Move(reason, self.clock.now_ns(), old.session)
        self.moves.append(move)
        new = await self._connect()
        move.new_session = new.session
        deadline = self.clock.now_ns() + round(self.connect_s * NS_PER_S)
        while not new.received.video and self.clock.now_ns() < deadline:
            await sleep_for(self.clock, 0.01)
        move.first_frame_ns = new.received.video[0][0] if new.received.video else 0
        move.last_old_frame_ns = old.received.video[-1][0] if old.received.video else 0
        self.peer, self._seen_messages, self._since = new, 0, self.clock.now_ns()
        self.retired.append(old)
        with contextlib.suppress(Exception):  # a dead node's peer may fail to close cleanly
            await old.close()
