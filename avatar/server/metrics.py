"""``GET /metrics``: the server in Prometheus' text format (prometheus-client).

- Per-stage latency histograms come from :class:`StageMetrics`, an observer like the profiler:
  the pipeline tells it what each stage did, it never asks.
- Sessions, frames, late/skipped/dropped frames, queue depths and each session's fps are read
  from the live sessions when Prometheus scrapes (:class:`SessionCollector`); counters of closed
  sessions are kept so totals never go back.
- Process CPU seconds and resident memory come from prometheus-client's process collector.

Each server has its own registry (tests run several servers in one process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from avatar.clock import Clock
from avatar.observe import Span, TimedSpan
from avatar.units import NS_PER_S

if TYPE_CHECKING:
    from avatar.frames import VideoFrame
    from avatar.server.session import Session

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
LATENCY_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2, 0.3, 0.5, 1.0, 2.0)
FRAME_COUNTERS = ("frames", "late", "skipped", "dropped", "filled")


class ServerMetrics:
    """The registry and the server's own counters."""

    def __init__(self, clock: Clock, sessions: Callable[[], Iterable[Session]],
                 capacity: int) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.offers = Counter("avatar_offers", "POST /offer answers by result",
                              ["result"], registry=self.registry)  # fmt: skip
        self.refused = Counter("avatar_requests_refused", "requests refused by reason",
                               ["reason"], registry=self.registry)  # fmt: skip
        self.faults = Counter("avatar_faults", "model or renderer failures inside sessions",
                              registry=self.registry)  # fmt: skip
        self.collector = SessionCollector(sessions, capacity)
        self.registry.register(self.collector)
        self.stages = StageMetrics(clock, self.registry)

    def closed(self, session: Session) -> None:
        self.collector.add_closed(session)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class SessionCollector(Collector):
    """Gauges and frame counters read from the live sessions at scrape time."""

    def __init__(self, sessions: Callable[[], Iterable[Session]], capacity: int) -> None:
        self.sessions, self.capacity = sessions, capacity
        self.building = 0  # engines being built (set by the server)
        self.draining = False
        self._closed_totals = dict.fromkeys(FRAME_COUNTERS, 0)
        self._closed_sessions = 0

    def add_closed(self, session: Session) -> None:
        for name, value in _frame_counts(session).items():
            self._closed_totals[name] += value
        self._closed_sessions += 1

    def collect(self) -> Iterator[Metric]:
        live = list(self.sessions())
        yield _gauge("avatar_sessions_active", "sessions open now", len(live))
        yield _gauge("avatar_sessions_capacity", "the session cap", self.capacity)
        yield _gauge("avatar_engines_building", "engines being built now", self.building)
        yield _gauge("avatar_draining", "1 while shutting down", int(self.draining))
        closed = CounterMetricFamily("avatar_sessions_closed", "sessions closed")
        closed.add_metric([], self._closed_sessions)
        yield closed
        totals = dict(self._closed_totals)
        for s in live:
            for name, value in _frame_counts(s).items():
                totals[name] += value
        for name in FRAME_COUNTERS:
            c = CounterMetricFamily(f"avatar_frames_{name}", _FRAME_HELP[name])
            c.add_metric([], totals[name])
            yield c
        fps = GaugeMetricFamily("avatar_session_fps", "frames per second over the last "
                                "stats interval", labels=["session"])  # fmt: skip
        depth = GaugeMetricFamily("avatar_queue_depth", "items waiting, summed over sessions",
                                  labels=["queue"])  # fmt: skip
        queues: dict[str, float] = {"backlog": 0, "video_out": 0, "audio_out": 0,
                                    "audio_in_s": 0.0}  # fmt: skip
        for s in live:
            fps.add_metric([s.sid], s.fps)
            for queue, waiting in s.queue_depths().items():
                queues[queue] += waiting
        yield fps
        for queue, waiting in queues.items():
            depth.add_metric([queue], waiting)
        yield depth


_FRAME_HELP = {
    "frames": "video frames produced",
    "late": "frames rendered after their due time",
    "skipped": "frames or audio blocks skipped to stay live",
    "dropped": "frames dropped because the sender was behind",
    "filled": "idle frames (no speech due)",
}


def _frame_counts(session: Session) -> dict[str, int]:
    s = session.engine.stats
    return {"frames": s.frames, "late": s.late, "skipped": s.skipped,
            "dropped": s.dropped + session.video.dropped, "filled": s.filled}  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


class StageMetrics:
    """An observer (see :mod:`avatar.observe`) that feeds per-stage latency histograms and the
    end-to-end latency (an audio sample in -> its frame sent). Shared by every session."""

    enabled = True

    def __init__(self, clock: Clock, registry: CollectorRegistry) -> None:
        self.clock = clock
        self.stage_seconds = Histogram(
            "avatar_stage_seconds", "time spent in each pipeline stage", ["stage"],
            buckets=STAGE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "avatar_latency_seconds", "audio received -> its video frame sent",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._children: dict[str, Any] = {}

    def observe(self, stage: str, ns: int) -> None:
        child = self._children.get(stage)
        if child is None:
            child = self._children[stage] = self.stage_seconds.labels(stage)
        child.observe(ns / NS_PER_S)

    def now(self) -> int:
        return self.clock.now_ns()

    def stage(self, name: str) -> Span:
        return TimedSpan(self.clock, name, self.observe)

    def take(self) -> dict[str, int]:
        return {}

    def span(self, frame: VideoFrame, stage: str, start_ns: int, end_ns: int) -> None:
        self.observe(stage, end_ns - start_ns)

    def done(self, frame: VideoFrame) -> None:
        t = frame.timing
        if t is not None and t.source_index >= 0:
            self.latency.observe((self.clock.now_ns() - t.audio_in_ns) / NS_PER_S)

    def report(self, frames: bool = False) -> list[dict[str, Any]]:
        return []


def merge_expositions(parts: Iterable[tuple[str | None, str]], label: str = "worker") -> bytes:
    """Several processes' ``/metrics`` texts as one exposition: every sample of a part gets
    ``label="<its value>"`` (a part whose value is None keeps its labels), and families of the
    same name are merged (the text format allows one ``# TYPE`` line per family)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for value, text in parts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            extra = {} if value is None else {label: value}
            merged.samples += [s._replace(labels={**s.labels, **extra}) for s in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
