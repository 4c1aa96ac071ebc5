"""The one clock of the engine.

Everything that needs time takes a :class:`Clock`; nothing in the package reads wall time
directly, so tests can drive time with :class:`FakeClock` and audio and video share one timeline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

NS_PER_S = 1_000_000_000


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in integer nanoseconds."""

    def now_ns(self) -> int: ...

    async def sleep_until(self, t_ns: int) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic_ns``."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep_until(self, t_ns: int) -> None:
        delay = (t_ns - self.now_ns()) / NS_PER_S
        if delay > 0:
            await asyncio.sleep(delay)


class FakeClock:
    """A clock that only moves when told to (tests, offline rendering)."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, dt_ns: int) -> None:
        if dt_ns < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += dt_ns

    async def sleep_until(self, t_ns: int) -> None:
        # Offline time: sleeping jumps the clock forward, then yields to the loop.
        if t_ns > self._now:
            self._now = t_ns
        await asyncio.sleep(0)
