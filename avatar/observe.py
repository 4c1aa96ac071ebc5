"""The observer of the pipeline: profiling (and any other per-frame measurement) plugs in here.

Every stage takes an :class:`Observer` and tells it what it does; none of them knows whether
anybody listens. The default, :data:`NULL_OBSERVER`, reads no clock and keeps nothing, so a
pipeline that nobody profiles pays for a few no-op calls. ``avatar.profile.Profiler`` is the
observer that times everything and writes per-frame records.

- ``stage(name)``: a context manager around one piece of analysis work (resample, vad, features,
  motion); the durations add up until ``take()`` hands them to the next frame job.
- ``now()``: the clock for spans measured by their caller (0 when nobody listens).
- ``span(frame, stage, start_ns, end_ns)``: one stage of one output frame (render, colour,
  encode, send).
- ``done(frame)``: the frame has left (its packets were sent, or it was encoded offline).
- ``report(frames)``: the live messages describing the frames done since the last report.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from avatar.clock import Clock
    from avatar.frames import VideoFrame


class Span(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Observer(Protocol):
    """Told what every stage does; see the module docstring."""

    enabled: bool

    def now(self) -> int: ...

    def stage(self, name: str) -> Span: ...

    def take(self) -> dict[str, int]: ...

    def span(self, frame: VideoFrame, stage: str, start_ns: int, end_ns: int) -> None: ...

    def done(self, frame: VideoFrame) -> None: ...

    def report(self, frames: bool = False) -> list[dict[str, Any]]: ...


class TimedSpan:
    """A span read on ``clock``; on exit its duration goes to ``add(name, ns)``."""

    __slots__ = ("add", "clock", "name", "start")

    def __init__(self, clock: Clock, name: str, add: Callable[[str, int], None]) -> None:
        self.clock, self.name, self.add, self.start = clock, name, add, 0

    def __enter__(self) -> object:
        self.start = self.clock.now_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.add(self.name, self.clock.now_ns() - self.start)


class _NullSpan:
    __slots__ = ()

    def __enter__(self) -> object:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class NullObserver:
    """Nobody listens: a shared do-nothing span, no clock reads, nothing kept."""

    enabled = False
    _span = _NullSpan()
    _empty: ClassVar[dict[str, int]] = {}

    def now(self) -> int:
        return 0

    def stage(self, name: str) -> Span:
        return self._span

    def take(self) -> dict[str, int]:
        return self._empty

    def span(self, frame: VideoFrame, stage: str, start_ns: int, end_ns: int) -> None:
        return None

    def done(self, frame: VideoFrame) -> None:
        return None

    def report(self, frames: bool = False) -> list[dict[str, Any]]:
        return []


NULL_OBSERVER = NullObserver()


class _Spans:
    """Several observers' spans entered and left together."""

    __slots__ = ("_spans",)

    def __init__(self, spans: list[Span]) -> None:
        self._spans = spans

    def __enter__(self) -> object:
        for s in self._spans:
            s.__enter__()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s in reversed(self._spans):
            s.__exit__(t, e, tb)


class FanOut:
    """Several observers as one (profiling and metrics at once). They must share one clock:
    ``now()`` is the first one's. ``take()`` and ``report()`` come from all of them."""

    enabled = True

    def __init__(self, *observers: Observer) -> None:
        self.observers = [o for o in observers if o.enabled]

    def now(self) -> int:
        return self.observers[0].now() if self.observers else 0

    def stage(self, name: str) -> Span:
        return _Spans([o.stage(name) for o in self.observers])

    def take(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.observers:
            out.update(o.take())
        return out

    def span(self, frame: VideoFrame, stage: str, start_ns: int, end_ns: int) -> None:
        for o in self.observers:
            o.span(frame, stage, start_ns, end_ns)

    def done(self, frame: VideoFrame) -> None:
        for o in self.observers:
            o.done(frame)

    def report(self, frames: bool = False) -> list[dict[str, Any]]:
        return [m for o in self.observers for m in o.report(frames)]


def combine(*observers: Observer) -> Observer:
    """The observers that listen, as one (the null observer when none does)."""
    live = [o for o in observers if o.enabled]
    if not live:
        return NULL_OBSERVER
    return live[0] if len(live) == 1 else FanOut(*live)
