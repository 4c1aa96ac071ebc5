"""The profiling observer: times every stage of every frame on the engine's one clock.

Analysis work is timed in spans (``with profiler.stage("vad")``) summed until the frame
assembly takes them for the next job; render, colour, encode and send are spans of one frame,
measured where they happen and written into its :class:`~avatar.frames.FrameTiming`. When a
frame is done (its packets sent, or encoded offline) its :class:`FrameRecord` joins the log;
:meth:`Profiler.report` turns the records since the last report into the live ``profile`` (and,
on request, ``profile_frames``) messages the page shows.
"""

from __future__ import annotations

from typing import Any

from avatar.clock import Clock
from avatar.frames import VideoFrame
from avatar.observe import Span, TimedSpan
from avatar.profile.log import FrameRecord, ProfileLog, as_dict, record_from, summarize


class Profiler:
    """An :class:`~avatar.observe.Observer` that keeps one record per frame done."""

    enabled = True

    def __init__(
        self, clock: Clock, fps: float, session: str = "", keep: int | None = None
    ) -> None:
        self.clock, self.fps, self.session = clock, fps, session
        self.origin_ns = clock.now_ns()
        self.log = ProfileLog(keep)
        self._totals: dict[str, int] = {}

    @property
    def records(self) -> list[FrameRecord]:
        return self.log.records

    def now(self) -> int:
        return self.clock.now_ns()

    def stage(self, name: str) -> Span:
        return TimedSpan(self.clock, name, self.add)

    def add(self, name: str, ns: int) -> None:
        self._totals[name] = self._totals.get(name, 0) + ns

    def take(self) -> dict[str, int]:
        totals, self._totals = self._totals, {}
        return totals

    def span(self, frame: VideoFrame, stage: str, start_ns: int, end_ns: int) -> None:
        if frame.timing is not None:
            frame.timing.stages[stage] = end_ns - start_ns
            frame.timing.starts[stage] = start_ns

    def done(self, frame: VideoFrame) -> None:
        if frame.timing is not None:
            self.log.add(record_from(self.session, frame.index, frame.timing, self.origin_ns))

    def report(self, frames: bool = False) -> list[dict[str, Any]]:
        window = self.log.window()
        if not window:
            return []
        messages = [{"type": "profile", **summarize(window, self.fps)}]
        if frames:
            messages.append({"type": "profile_frames", "frames": [as_dict(r) for r in window]})
        return messages
