"""Stage timing for the profiler, on the engine's one clock; free when profiling is off.

Work is timed with ``with meter.stage("vad"): ...``. A :class:`Meter` adds each span's duration to
the stage's total until :meth:`Meter.take` hands the totals over (the analysis takes them for
every frame it emits, so a frame carries the work done since the previous one). The
:data:`NULL_METER` used when profiling is off reads no clock and keeps nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Protocol

from avatar.clock import Clock


class Span(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class StageMeter(Protocol):
    def stage(self, name: str) -> Span: ...

    def take(self) -> dict[str, int]: ...


class _NullSpan:
    __slots__ = ()

    def __enter__(self) -> object:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class NullMeter:
    """Profiling off: a shared do-nothing span, no clock reads."""

    _span = _NullSpan()
    _empty: ClassVar[dict[str, int]] = {}

    def stage(self, name: str) -> Span:
        return self._span

    def take(self) -> dict[str, int]:
        return self._empty


NULL_METER = NullMeter()


class _TimedSpan:
    __slots__ = ("meter", "name", "start")

    def __init__(self, meter: Meter, name: str) -> None:
        self.meter, self.name, self.start = meter, name, 0

    def __enter__(self) -> object:
        self.start = self.meter.clock.now_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.meter.add(self.name, self.meter.clock.now_ns() - self.start)


class Meter:
    """Profiling on: durations (ns) summed per stage between takes."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._totals: dict[str, int] = {}

    def stage(self, name: str) -> Span:
        return _TimedSpan(self, name)

    def add(self, name: str, ns: int) -> None:
        self._totals[name] = self._totals.get(name, 0) + ns

    def take(self) -> dict[str, int]:
        totals, self._totals = self._totals, {}
        return totals
