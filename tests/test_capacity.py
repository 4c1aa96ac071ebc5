"""The capacity driver behind ``scripts/bench_sessions.py``: sessions spread over processes."""

from __future__ import annotations

from avatar.compose.capacity import run_spread
from avatar.config import load_config


def test_sessions_spread_over_processes_all_run_their_ticks() -> None:
    cfg = load_config(overrides=["render.size=64"])
    one = run_spread(cfg, 3, 1.0, static=True, processes=1)
    spread = run_spread(cfg, 3, 1.0, static=True, processes=2)  # 2 + 1 sessions
    # every session runs every tick of the second (sent or late), in one process or two
    assert one.sessions == spread.sessions == 3
    assert one.ticks == spread.ticks == 3 * 25
    assert spread.cpu_s > 0 and 0 <= spread.late <= spread.ticks
