"""Profiling: free when off, complete when on, and a report people can open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.io import iter_audio
from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock, FakeClock
from avatar.config import EngineConfig, VadConfig
from avatar.engine import AvatarEngine
from avatar.frames import FrameTiming
from avatar.observe import NULL_OBSERVER, Observer
from avatar.profile.log import (
    STAGES,
    FrameRecord,
    ProfileLog,
    record_from,
    summarize,
    trace_events,
)
from avatar.profile.profiler import Profiler
from avatar.profile.report import write_report
from tests.test_engine import SAMPLE, InlineExecutor, JawRenderer, run_offline


class CountingClock(FakeClock):
    """Counts clock reads: profiling off must not add any inside the analysis."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def now_ns(self) -> int:
        self.reads += 1
        self.advance(1000)  # 1 us per read so spans are never 0
        return super().now_ns()


def _engine(backend: InferenceBackend, clock: Clock, observer: Observer) -> AvatarEngine:
    return AvatarEngine(backend, JawRenderer(), clock, EngineConfig(), VadConfig(), 25.0,
                        realtime=False, executor=InlineExecutor(), observer=observer,
                        i420=True)  # fmt: skip


def test_meter_off_reads_no_clock_and_on_times_every_stage() -> None:
    from avatar.backends.onnxruntime import OrtBackend
    from tests.conftest import WEIGHTS

    speech = np.concatenate(list(iter_audio(SAMPLE, rate=48000, block_s=1.0)))
    backend = OrtBackend(WEIGHTS / "motion.onnx")
    audio = np.concatenate([np.zeros(24000, np.float32), speech[: 48000 * 2]])
    off_clock, on_clock = CountingClock(), CountingClock()
    off = asyncio.run(run_offline(_engine(backend, off_clock, NULL_OBSERVER), audio))
    profiler = Profiler(on_clock, 25.0)
    on = asyncio.run(run_offline(_engine(backend, on_clock, profiler), audio))
    assert all(f.timing is not None and not f.timing.stages for f in off)
    assert all(f.timing is not None and not f.timing.analysis for f in off)
    assert on_clock.reads > off_clock.reads + 4 * len(on)  # the spans are the difference
    speaking = [f for f in on if f.motion is not None and f.motion.is_speech]
    assert speaking
    for f in speaking[5:]:
        assert f.timing is not None and {"render", "colour"} <= set(f.timing.stages)
        assert f.timing.starts["colour"] >= f.timing.render_end_ns  # in the render hop, after it
        profiler.done(f)
        assert {"inbox", "ready"} <= set(profiler.records[-1].waits)
    analysed = set().union(*(set(f.timing.analysis) for f in on if f.timing is not None))
    assert {"resample", "vad", "features", "motion"} <= analysed
    assert NULL_OBSERVER.take() == {} and NULL_OBSERVER.report() == []
    assert [m["type"] for m in profiler.report(frames=True)] == ["profile", "profile_frames"]


def test_out_wait_runs_from_the_hand_out_to_the_senders_first_stage() -> None:
    ms = 1_000_000
    timing = FrameTiming(0, 0, 0, 0, 1 * ms, 7 * ms, emit_ns=10 * ms)
    timing.starts = {"colour": 7 * ms, "encode": 12 * ms}  # colour made in the render hop
    assert record_from("s", 0, timing, 0).waits["out"] == pytest.approx(2.0)
    timing.starts = {"colour": 11 * ms, "encode": 12 * ms}  # a frame without planes: the sender's
    assert record_from("s", 0, timing, 0).waits["out"] == pytest.approx(1.0)
    timing.starts = {"colour": 7 * ms}  # not encoded (yet)
    assert "out" not in record_from("s", 0, timing, 0).waits


def _records(n: int = 60) -> list[FrameRecord]:
    out = []
    for i in range(n):
        due = i * 40_000_000
        ms = 1_000_000
        t = FrameTiming(i if i % 10 else -1, due - 60 * ms, due - 5 * ms, due, due + ms,
                        due + 6 * ms, due + 6 * ms + ms // 2, late=int(i == 30),
                        inbox_wait_ns=100_000)  # fmt: skip
        t.analysis = {"motion": 600_000}
        t.stages = {"render": 5_000_000, "colour": 2_000_000}
        t.starts = {"colour": due + 7_000_000}
        out.append(record_from("s1", i, t, 0))
    return out


def test_summary_and_trace_are_consistent() -> None:
    records = _records()
    s = summarize(records, 25.0)
    assert s["frames"] == 60 and s["late"] == 1 and s["idle"] == 6
    assert s["stages"]["render"]["p50"] == pytest.approx(5.0)
    assert s["stages"]["encode"] is None  # never measured: absent, not zero
    assert s["latency_ms"]["p50"] == pytest.approx(66.5)
    assert s["budget_use"] == pytest.approx(7.6 / 40, abs=1e-3)
    events = trace_events(records, 25.0)
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} >= {"motion", "render", "colour", "idle"}
    assert all(e["dur"] > 0 for e in spans)
    log = ProfileLog(keep=10)
    for r in records:
        log.add(r)
    assert len(log.window()) <= 20 and log.window() == []


def test_report_folder_has_page_plots_summary_and_trace(tmp_path: Path) -> None:
    out = tmp_path / "report"
    summary = write_report(out, _records(), 25.0, {"command": "test"}, browser_e2e_ms=[150, 170])
    for name in ("index.html", "summary.json", "trace.json", "frames.json",
                 "timeline.png", "latency.png", "budget.png", "stages.png"):  # fmt: skip
        assert (out / name).stat().st_size > 100, name
    assert json.loads((out / "summary.json").read_text())["browser_e2e_ms"]["p50"] == 160
    page = (out / "index.html").read_text()
    assert "160.0 / 169.0 ms" in page and "render" in page and "http" not in page.split("<body>")[0]
    assert summary["sessions"] == 1 and set(STAGES) >= set(summary["stages"]) - {None}
