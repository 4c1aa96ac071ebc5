"""The capacity driver behind ``scripts/bench_sessions.py``: sessions spread over processes."""

from __future__ import annotations

import numpy as np

from avatar.compose.capacity import run_spread
from avatar.compose.profile import duty_speech, talk_turns
from avatar.config import load_config


def test_sessions_spread_over_processes_all_run_their_ticks() -> None:
    cfg = load_config(overrides=["render.size=64"])
    one = run_spread(cfg, 3, 1.0, static=True, processes=1)
    spread = run_spread(cfg, 3, 1.0, static=True, processes=2)  # 2 + 1 sessions
    # every session runs every tick of the second (sent or late), in one process or two
    assert one.sessions == spread.sessions == 3
    assert one.ticks == spread.ticks == 3 * 25
    assert spread.cpu_s > 0 and 0 <= spread.late <= spread.ticks


def test_duty_cycle_talks_about_half_the_time_and_not_all_at_once() -> None:
    turns = [talk_turns(300, k) for k in range(4)]
    for t in turns:
        assert 0.4 < sum(end - start for start, end in t) / 300 < 0.6
    talking = [[any(a <= s < b for a, b in t) for t in turns] for s in range(300)]
    assert sum(map(all, talking)) < 0.2 * 300  # everyone at once only now and then
    assert 0.3 < sum(map(sum, talking)) / (4 * 300) < 0.7
    audio = duty_speech(30, session=1)  # an odd session starts listening
    rate = len(audio) // 30
    (start, end), *_ = talk_turns(30, 1)
    listening, speaking = audio[: int(start * rate)], audio[int(start * rate) : int(end * rate)]
    assert np.sqrt(np.mean(listening**2)) < 1e-3 < np.sqrt(np.mean(speaking**2))


def test_duty_cycle_sessions_run_and_report_their_talking() -> None:
    cfg = load_config(overrides=["render.size=64"])
    r = run_spread(cfg, 2, 2.0, speech="duty")  # session 0 starts talking, session 1 listening
    assert r.sessions == 2 and r.ticks > 0
    assert 0 < r.talking < r.ticks - r.late  # one spoke, the other did not
