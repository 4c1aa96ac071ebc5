"""Per-frame profile records, their live summaries and the Chrome/Perfetto trace.

A :class:`FrameRecord` is one output frame's life on the engine clock: the analysis work done for
it (resample, VAD, features, audio-to-motion), render, colour conversion, encode and send, the
time it waited in each queue (inbox, ready, out), its latency and the late/skip/fill decisions
taken just before it. Times are milliseconds relative to the log's start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from avatar.frames import FrameTiming

STAGES = ("resample", "vad", "features", "motion", "render", "colour", "encode", "send")
WAITS = ("inbox", "ready", "out")
ANALYSIS = ("resample", "vad", "features", "motion")
_SENDER = ("colour", "encode")  # what may run once the video sender takes a frame


@dataclass(slots=True)
class FrameRecord:
    session: str
    index: int  # output frame
    source: int  # input frame shown (-1: idle filler)
    due_ms: float  # its tick
    emit_ms: float  # handed to the sender
    latency_ms: float | None  # oldest audio sample pushed -> frame handed out
    stages: dict[str, float] = field(default_factory=dict)  # ms of work per stage
    starts: dict[str, float] = field(default_factory=dict)  # when measured stages began
    waits: dict[str, float] = field(default_factory=dict)  # ms in each queue
    late: int = 0  # ticks missed just before this frame
    skipped: int = 0  # frames skipped just before this frame

    @property
    def filled(self) -> bool:
        return self.source < 0

    def work_ms(self) -> float:
        return float(sum(self.stages.values()))


def record_from(session: str, index: int, timing: FrameTiming, origin_ns: int) -> FrameRecord:
    """A record from a frame's timing (stages in ns, absolute engine-clock times). The queue
    waits come from the timing's own times: *inbox* (a block waiting for its analysis), *ready*
    (a job waiting for its tick and render), *out* (a frame waiting for the video sender)."""

    def ms(t: int) -> float:
        return (t - origin_ns) / 1e6

    starts = {"render": ms(timing.render_start_ns)}
    starts.update({k: ms(v) for k, v in timing.starts.items()})
    waits = {"inbox": timing.inbox_wait_ns / 1e6}
    waits["ready"] = (timing.render_start_ns - timing.ready_ns) / 1e6
    # the sender took the frame when its first stage after the hand-out began (colour made in
    # the render hop began before it)
    picked = [t for s, t in timing.starts.items() if s in _SENDER and t >= timing.emit_ns]
    if picked:
        waits["out"] = (min(picked) - timing.emit_ns) / 1e6
    stages = {k: v / 1e6 for k, v in {**timing.analysis, **timing.stages}.items()}
    return FrameRecord(
        session, index, timing.source_index, ms(timing.due_ns), ms(timing.emit_ns),
        timing.latency_ns / 1e6 if timing.source_index >= 0 else None,
        stages, starts, waits, timing.late, timing.skipped,
    )  # fmt: skip


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values)
    p50, p95 = np.percentile(a, [50, 95])
    return {
        "p50": round(float(p50), 3), "p95": round(float(p95), 3), "mean": round(float(a.mean()), 3)
    }  # fmt: skip


def summarize(records: list[FrameRecord], fps: float) -> dict[str, Any]:
    """Stage and queue quantiles (ms), budget use, counters: the live message and the report."""
    budget = 1000.0 / fps
    lat = [r.latency_ms for r in records if r.latency_ms is not None]
    work = [r.work_ms() for r in records]
    return {
        "frames": len(records),
        "fps": _fps_per_session(records),
        "budget_ms": round(budget, 3),
        "budget_use": round(float(np.mean(work)) / budget, 4) if work else None,
        "late": sum(r.late for r in records),
        "skipped": sum(r.skipped for r in records),
        "idle": sum(r.filled for r in records),
        "latency_ms": _quantiles(lat) or {"p50": None, "p95": None},
        "stages": {s: _quantiles([r.stages[s] for r in records if s in r.stages]) for s in STAGES},
        "waits": {w: _quantiles([r.waits[w] for r in records if w in r.waits]) for w in WAITS},
    }


def _fps_per_session(records: list[FrameRecord]) -> float | None:
    """Frames per second of each session, averaged over the sessions."""
    rates = []
    for session in {r.session for r in records}:
        due = sorted(r.due_ms for r in records if r.session == session)
        if len(due) > 1 and due[-1] > due[0]:
            rates.append((len(due) - 1) * 1000 / (due[-1] - due[0]))
    return round(float(np.mean(rates)), 2) if rates else None


class ProfileLog:
    """Records in arrival order; ``window()`` returns those since the previous call."""

    def __init__(self, keep: int | None = None) -> None:
        self.records: list[FrameRecord] = []
        self.keep = keep  # None: keep everything (reports); n: the last n (live sessions)
        self._window_start = 0
        self.dropped = 0

    def add(self, record: FrameRecord) -> None:
        self.records.append(record)
        if self.keep is not None and len(self.records) > 2 * self.keep:
            cut = len(self.records) - self.keep
            del self.records[:cut]
            self._window_start = max(self._window_start - cut, 0)
            self.dropped += cut

    def window(self) -> list[FrameRecord]:
        out = self.records[self._window_start :]
        self._window_start = len(self.records)
        return out


def as_dict(record: FrameRecord) -> dict[str, Any]:
    d = asdict(record)
    d["stages"] = {k: round(v, 3) for k, v in record.stages.items()}
    d["waits"] = {k: round(v, 3) for k, v in record.waits.items()}
    d["starts"] = {k: round(v, 3) for k, v in record.starts.items()}
    return d


def from_dict(d: dict[str, Any]) -> FrameRecord:
    return FrameRecord(**d)


def trace_events(records: list[FrameRecord], fps: float) -> list[dict[str, Any]]:
    """Chrome trace events (``chrome://tracing``, ui.perfetto.dev): one process per session,
    one thread per lane. Stages with a measured start are placed there; the analysis stages are
    laid end to end, finishing when the frame's job became ready (they ran in several blocks)."""
    events: list[dict[str, Any]] = []
    sessions = {s: i + 1 for i, s in enumerate(dict.fromkeys(r.session for r in records))}
    lanes = {"analysis": 1, "render": 2, "colour": 3, "encode": 4, "send": 5, "frame": 6}
    for name, pid in sessions.items():
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}})
        for lane, tid in lanes.items():
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                           "args": {"name": lane}})  # fmt: skip
    for r in records:
        pid = sessions[r.session]
        end = r.starts.get("render", r.due_ms) - r.waits.get("ready", 0.0)
        for stage in reversed(ANALYSIS):
            if stage in r.stages:
                end -= r.stages[stage]
                events.append(_span(stage, pid, lanes["analysis"], end, r.stages[stage], r))
        for stage in ("render", "colour", "encode", "send"):
            if stage in r.stages and stage in r.starts:
                events.append(_span(stage, pid, lanes[stage], r.starts[stage], r.stages[stage], r))
        label = "idle" if r.filled else f"frame {r.index}"
        events.append(_span(label, pid, lanes["frame"], r.due_ms, 980 / fps, r))
        if r.late or r.skipped:
            events.append({"ph": "i", "name": f"late {r.late} / skipped {r.skipped}", "pid": pid,
                           "tid": lanes["frame"], "ts": r.due_ms * 1000, "s": "t"})  # fmt: skip
    return events


def _span(
    name: str, pid: int, tid: int, start_ms: float, dur_ms: float, r: FrameRecord
) -> dict[str, Any]:
    return {
        "ph": "X", "name": name, "pid": pid, "tid": tid, "ts": round(start_ms * 1000, 1),
        "dur": round(max(dur_ms, 0.001) * 1000, 1),
        "args": {"frame": r.index, "source": r.source, "latency_ms": r.latency_ms},
    }  # fmt: skip
