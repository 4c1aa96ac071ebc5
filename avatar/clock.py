"""The one clock of the engine.

Everything that needs time takes a :class:`Clock`; nothing in the package reads wall time
directly, so tests can drive time with :class:`FakeClock` and audio and video share one timeline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

from avatar.units import NS_PER_S


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in integer nanoseconds."""

    def now_ns(self) -> int: ...

    async def sleep_until(self, t_ns: int) -> None: ...


async def sleep_for(clock: Clock, seconds: float) -> None:
    """Sleep ``seconds`` on ``clock``."""
    await clock.sleep_until(clock.now_ns() + round(seconds * NS_PER_S))


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


class SteppedClock:
    """A test clock that sleepers really wait on: time moves only with :meth:`advance`.

    Unlike :class:`FakeClock` (offline: sleeping jumps time), a loop paced by this clock runs
    exactly as far as the test lets time pass, as a real-time loop would."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._moved = asyncio.Condition()

    def now_ns(self) -> int:
        return self._now

    async def advance(self, dt_ns: int) -> None:
        """Move time forward and let every sleeper whose time has come run."""
        if dt_ns < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += dt_ns
        async with self._moved:
            self._moved.notify_all()
        for _ in range(5):  # let woken tasks and their executor hand-offs settle
            await asyncio.sleep(0)

    def spend(self, dt_ns: int) -> None:
        """Time passing inside blocking work (a fake renderer that is too slow)."""
        self._now += dt_ns

    async def sleep_until(self, t_ns: int) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= t_ns)


def unix_time() -> float:
    """Seconds since 1970: the package's one wall-clock read, for times that leave the process
    (token expiry, TURN credentials). Servers take it injected; everything else uses a Clock."""
    return time.time()
