"""CPU per session of this checkout against another, both running at the same moment.

    python scripts/bench_ab.py --baseline DIR [--sessions 1] [--speech continuous] [--seconds 20]
                               [--reps 3] [--size 512] [--set KEY=VALUE ...]

``scripts/bench_sessions.py --baseline`` runs the two checkouts one after the other, and on a
shared VM the CPU a session costs moves by more than a change does between minutes: identical
runs a minute apart measured 11.6 % and 17.0 % of a core. Here each repetition starts the
baseline's sessions and this checkout's sessions in two processes at once (each loads its own
package: ``PYTHONPATH`` is its checkout), so whatever the host does meanwhile it does to both;
the order of the two starts alternates. Each process runs ``N`` sessions
(:func:`avatar.compose.capacity.run_sessions`) for ``--seconds`` and reports its own CPU per
session; the script prints every pair and the mean ratio (this / baseline). Two processes of N
sessions load the machine like 2N: keep N well under half the capacity, or the late frames of
one disturb the other (both are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

HERE = Path(__file__).resolve().parents[1]

# run inside each checkout: its own capacity harness, one JSON line out
PROBE = """
import json, sys
from avatar.compose.capacity import run_sessions
from avatar.config import load_config
n, seconds, speech, sets = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
cfg = load_config(overrides=sets)
extra = {} if speech == "continuous" else {"speech": speech}
r = run_sessions(cfg, n, seconds, **extra)
print(json.dumps({"cpu": r.cpu_per_session, "late": r.late_share}))
"""


def probe(code: Path, args: argparse.Namespace) -> dict[str, float]:
    """One run of ``args.sessions`` sessions with ``code``'s package, in a child process."""
    sets = [f"render.size={args.size}", *args.set]
    cmd = [sys.executable, "-c", PROBE, str(args.sessions), str(args.seconds), args.speech, *sets]
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{code}: the probe failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def pair(baseline: Path, args: argparse.Namespace, rep: int) -> tuple[dict[str, float], ...]:
    """(baseline, this), both run at once; which one starts first alternates with ``rep``
    (the baseline may be this same checkout: an A/A run)."""
    swap = rep % 2 == 1
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(probe, code, args) for code in ([HERE, baseline] if swap else
                                                            [baseline, HERE])]  # fmt: skip
        first, second = (run.result() for run in runs)
    return (second, first) if swap else (first, second)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="another checkout")
    ap.add_argument("--sessions", type=int, default=1, help="sessions in each process")
    ap.add_argument("--speech", default="continuous", help="continuous or duty")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(f"{args.sessions} session(s) per checkout, {args.speech} speech, {args.seconds:g} s, "
          f"{args.size}x{args.size}; CPU per session as a share of one core")  # fmt: skip
    ratios: list[float] = []
    for rep in range(args.reps):
        before, after = pair(args.baseline.resolve(), args, rep)
        ratios.append(after["cpu"] / before["cpu"])
        print(f"  rep {rep + 1}: baseline {100 * before['cpu']:.1f} % "
              f"({100 * before['late']:.2f} % late), this {100 * after['cpu']:.1f} % "
              f"({100 * after['late']:.2f} % late): x{ratios[-1]:.3f}", flush=True)  # fmt: skip
    print(f"this / baseline: x{mean(ratios):.3f} (min x{min(ratios):.3f}, max x{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
