"""The frame budget: the tick clock of one engine and its late-frame policy, every decision counted.

A tick every ``1/fps`` on the injected clock; each tick shows one frame. Counted in
:class:`EngineStats`:

- **late**: a render that overruns makes its tick late; the loop never sleeps to make up missed
  ticks, it skips them (their time slots are gone) and carries on from now. With live input the
  frames those ticks would have shown are skipped too.
- **skipped**: with live input, jobs waiting beyond ``max_backlog_frames`` are dropped oldest
  first, audio included, so after a stall the stream returns to live instead of staying behind.
  With buffered input (text-to-speech) nothing is skipped: the speech plays out at real time.
- **filled**: in real time, a tick with no job sends an idle frame with silent audio.
- **dropped**: a frame the consumer did not take before newer ones came (counted by the engine).

Live, :class:`TickPhase` keeps the ticks just after frames become ready and the backlog near 0.
Offline (not real time) every frame gets a tick: nothing is late, filled or skipped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from avatar.config import EngineConfig
from avatar.engine.assembly import FrameJob
from avatar.units import NS_PER_S

Ready = deque[tuple[FrameJob, int]]  # analysed jobs waiting for their tick, with their ready time


@dataclass(slots=True)
class EngineStats:
    """Counters of one engine; ``latencies_ns`` keeps the last few thousand speech frames."""

    frames: int = 0
    late: int = 0
    skipped: int = 0
    skipped_samples: int = 0  # output-rate audio of the skipped frames and dropped input blocks
    filled: int = 0
    dropped: int = 0
    model_frames: int = 0
    measured: int = 0  # latencies recorded so far (the deque keeps the last 5000)
    latencies_ns: deque[int] = field(default_factory=lambda: deque(maxlen=5000))


class FrameBudget:
    """Tick times, output timestamps and the late-frame policy; see the module docstring."""

    def __init__(self, fps: float, cfg: EngineConfig, *, live: bool, realtime: bool) -> None:
        self.period = NS_PER_S / fps
        self.live, self.realtime = live, realtime
        self.max_backlog = cfg.max_backlog_frames
        self.phase = TickPhase(self.period, adjust=cfg.tick_phase) if live else None
        self.stats = EngineStats()
        self.tick = 0  # ticks since the start, missed ones included
        self.out = 0  # frames handed out
        self._t0 = 0
        self._counted = (0, 0)  # late, skipped already attributed to a frame

    def start(self, now_ns: int) -> None:
        self._t0 = now_ns

    def due(self) -> int:
        """When the next tick is due."""
        return self._t0 + round(self.tick * self.period)

    def pts(self) -> int:
        """The next frame's timestamp: its tick in real time, its position offline."""
        return round((self.tick if self.realtime else self.out) * self.period)

    def admit(self, ready: Ready) -> None:
        """A job was added: live, the oldest beyond ``max_backlog_frames`` are skipped."""
        while self.live and len(ready) > self.max_backlog:
            self._skip_oldest(ready)

    def on_tick(self, due: int, ready_ns: int | None, ready: Ready) -> None:
        """A tick took a job that became ready at ``ready_ns`` (None: nothing was ready)."""
        if self.phase is None:
            return
        shift, trim = self.phase.observe(due, ready_ns, len(ready))
        self._t0 += shift
        if trim and ready:
            self._skip_oldest(ready)

    def after_frame(self, now_ns: int, ready: Ready) -> None:
        """A frame was handed out at ``now_ns``: skip the ticks that passed meanwhile."""
        self.tick, self.out = self.tick + 1, self.out + 1
        behind = now_ns - self.due()
        if self.realtime and behind >= self.period:
            missed = math.floor(behind / self.period)
            self.tick += missed
            self.stats.late += missed
            if self.live:  # the frames of the missed ticks go with them
                for _ in range(min(missed, len(ready))):
                    self._skip_oldest(ready)

    def decisions(self) -> tuple[int, int]:
        """Ticks missed and frames skipped since the previous call (for the next frame)."""
        now = (self.stats.late, self.stats.skipped)
        late, skipped = now[0] - self._counted[0], now[1] - self._counted[1]
        self._counted = now
        return late, skipped

    def _skip_oldest(self, ready: Ready) -> None:
        dropped = ready.popleft()[0]
        if dropped.events and ready:  # speech events are never lost with their frame
            ready[0][0].events[:0] = dropped.events
        self.stats.skipped += 1
        self.stats.skipped_samples += len(dropped.audio.samples)


class TickPhase:
    """Keeps live ticks just after their frames become ready, and the backlog near zero.

    Every ``window`` ticks: if a frame was always waiting even after a tick took one, one frame
    is skipped (a frame of latency removed); otherwise, if every frame taken had waited more than
    ``margin``, the ticks move that much earlier. A tick that finds nothing, followed by a frame
    ready within the period, moves the ticks later to just after it. Returns (shift ns, trim).
    """

    def __init__(
        self, period_ns: float, window: int = 25, margin_ns: int = 6_000_000, adjust: bool = True
    ) -> None:
        self.period, self.window, self.margin = period_ns, window, margin_ns
        self.adjust = adjust  # False: only trim the backlog, never move the ticks
        self._waits: list[int] = []
        self._min_backlog = 1 << 30
        self._ticks = 0
        self._empty_due: int | None = None

    def observe(self, due: int, ready_ns: int | None, backlog: int) -> tuple[int, bool]:
        shift, trim = 0, False
        if ready_ns is None:
            self._empty_due = due
        else:
            if self._empty_due is not None and 0 < ready_ns - self._empty_due < self.period:
                shift = round(ready_ns - self._empty_due + self.margin - self.period)
                self._waits.clear()
            self._empty_due = None
            self._waits.append(due - ready_ns)
        self._min_backlog = min(self._min_backlog, backlog)
        self._ticks += 1
        if self._ticks >= self.window:
            if self._min_backlog >= 1:
                trim = True
            elif len(self._waits) == self._ticks and min(self._waits) > self.margin:
                shift = -(min(self._waits) - self.margin)
            self._waits.clear()
            self._min_backlog, self._ticks = 1 << 30, 0
        return (shift if self.adjust else 0), trim
