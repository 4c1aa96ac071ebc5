"""``scripts/soak.py`` for one minute: four live sessions against one ``avatar serve`` process.

Asserts behaviour, not speed: on a busy 2-core machine four sessions may have late frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
SESSIONS, INTERVAL_S = 4, 10
# 256 px instead of 512: the same sessions, signalling and media paths at about half the CPU, so
# four sessions and their four client peers keep up on a 2-core machine that is running other work
SERVER = ["--set", "render.size=256"]
FRAME_MS = 40.0  # 25 fps
# The offset at an aiortc client is about +1 frame by itself: its receiver holds each video frame
# until the next one starts (README: +34 ms mean over 5 min, one session). Four sessions, session
# means: +34 to +43 ms on an idle 2-core VM (512 px); +62 to +68 ms at 256 px with other work on
# the machine (9 % late frames: a late or skipped frame puts the marker one frame later). So:
# one frame of tolerance around that +1 frame, plus one frame of margin for a busy machine.
OFFSET_RANGE_MS = (-FRAME_MS, 3 * FRAME_MS)
# Server RSS at the first ten-second sample vs later, four sessions: 256 px +23 MB (240 -> 263 MB)
# and flat from 30 s; 512 px +44 MB over the first minute, then flat (386-388 MB from 1 to 3 min),
# as per-session buffers fill (the latency window alone keeps 5,000 frames). Leaking one 256 px
# frame (192 kB) per frame in one session would add ~290 MB a minute; 150 MB is several times
# the growth seen and still catches that.
RSS_GROWTH_MB = 150.0
# A client event loop that did not run for this long cannot answer ICE consent checks (0.5 s):
# the server rightly drops its peers. Seen only when other work froze the whole machine; the
# failure then says so (a failed run is a failure, whatever the machine did).
CLIENT_FROZEN_MS = 2000.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    cmd = [sys.executable, str(SCRIPT), "--sessions", str(SESSIONS), "--minutes", "1",
           "--interval", str(INTERVAL_S), "--out", str(out), *SERVER]  # fmt: skip
    # its own process group, so that a timeout also stops the server it started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"soak.py did not finish in 300 s:\n{log[-4000:]}")
    assert out.exists(), log[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    frozen = max((row["client_loop_lag"]["max_ms"] for row in result["intervals"]), default=0)
    stalled = (f"; the client's event loop stalled {frozen:.0f} ms (other work froze this "
               "machine?)" if frozen > CLIENT_FROZEN_MS else "")  # fmt: skip
    assert proc.returncode == 0 and not result["failures"], (
        f"soak.py failed ({proc.returncode}): {result['failures']}{stalled}\n{log[-4000:]}"
    )
    return result


def test_every_session_streams_video_and_audio_all_minute(soak: dict[str, Any]) -> None:
    assert soak["failures"] == []
    assert len(soak["intervals"]) == 60 // INTERVAL_S
    for row in soak["intervals"]:
        assert len(row["sessions"]) == SESSIONS
        for s in row["sessions"]:
            assert s["state"] == "connected", (row["t_s"], s)
            assert s["video_frames"] > 0 and s["audio_frames"] > 0, (row["t_s"], s)
            assert s["stats_messages"] > 0, (row["t_s"], s)
    for s in soak["per_session"]:
        assert s["error"] is None and s["frames"] > 0, s


def test_av_offsets_are_measured_and_within_about_a_frame(soak: dict[str, Any]) -> None:
    lo, hi = OFFSET_RANGE_MS
    for s in soak["per_session"]:
        av = s["av_offset_ms"]
        # two bursts per 10 s loop: 12 a minute, less one still in flight at the end and any
        # whose two marked frames were both skipped
        assert av["bursts"] >= 6, s
        assert lo <= av["mean"] <= hi, s


def test_server_memory_does_not_grow_without_bound(soak: dict[str, Any]) -> None:
    rss = [row["rss_mb"] for row in soak["intervals"]]
    assert max(rss) < rss[0] + RSS_GROWTH_MB, rss
