"""A serving process runs each OpenCV and BLAS call on one thread (sessions run side by side on
the executor's threads instead). Checked in a child process: the setting is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, cv2
from threadpoolctl import threadpool_info
from avatar.clock import MonotonicClock
from avatar.compose.engines import engine_factory
from avatar.config import load_config

def threads():
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {"cv2": cv2.getNumThreads(), "blas": blas}

cv2.setNumThreads(4)  # as on a machine with 4 cores, whatever this one has
before = threads()
engine_factory(load_config(), MonotonicClock(), None)
print(json.dumps({"before": before, "after": threads()}))
"""


def test_a_server_runs_each_kernel_call_on_one_thread() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"]["cv2"] == 4  # the check below can fail
    assert got["after"]["cv2"] == 1
    assert got["after"]["blas"] and set(got["after"]["blas"]) == {1}
