"""Largest number of concurrent live sessions this machine holds, against an encode-only baseline.

    python scripts/bench_sessions.py [--seconds 10] [--max 12] [--size 512] [--processes 1,2]
                                     [--batch] [--baseline DIR]

Each session is the server's per-peer work in real time (avatar.compose.capacity: engine +
colour conversion + aiortc's VP8 encoder with the server's settings, no network). For each
process count (``avatar serve --workers K`` spreads sessions over K processes the same way) it
prints, for N = 1, 2, ... until more than 1 % of frames are late: late share, CPU per session
(share of one core) and, for the avatar sessions, per-stage p50 ms; then the capacities and their
ratios. ``--batch`` adds avatar runs with cross-session batching (``engine.batch.enabled``).
``--baseline DIR`` first runs the same benchmark from another checkout (its own script and
package, e.g. a ``git worktree`` of an older commit) in a child process, then this one, and prints
CPU per session at N=1 and capacity side by side: before/after in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from avatar.compose.capacity import RunResult, find_capacity
from avatar.compose.profile import machine
from avatar.config import load_config
from avatar.profile.log import STAGES


def show(kind: str, best: int, runs: list[RunResult], static: bool) -> None:
    print(f"\n{kind} sessions")
    print("  N  late %  CPU/session" + ("".join(f"{s:>9}" for s in STAGES) if not static else ""))
    for r in runs:
        stages = "".join(
            f"{(r.stages.get(s) or {}).get('p50', float('nan')):9.2f}" for s in STAGES
        ) if not static else ""  # fmt: skip
        print(
            f"{r.sessions:3d} {100 * r.late_share:7.2f} {100 * r.cpu_per_session:10.1f} %{stages}"
        )
    print(f"=> {kind}: {best} sessions with <= 1 % late frames")


def as_json(r: RunResult) -> dict[str, Any]:
    return {"sessions": r.sessions, "late_share": r.late_share,
            "cpu_per_session": r.cpu_per_session, "stages": r.stages}  # fmt: skip


def run_baseline(code: Path, argv: list[str]) -> dict[str, Any]:
    """The baseline checkout's own benchmark (its script, its package) in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        env = {**os.environ, "PYTHONPATH": str(code)}
        cmd = [
            sys.executable,
            str(code / "scripts" / "bench_sessions.py"),
            *argv,
            "--out",
            str(out),
        ]
        print(f"baseline: {code} (git {_commit(code)})", flush=True)
        subprocess.run(cmd, env=env, cwd=code, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _commit(code: Path) -> str:
    rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)  # fmt: skip
    return rev.stdout.strip() or "?"


def compare(before: dict[str, Any], after: dict[str, Any]) -> None:
    print("\nbefore (baseline) -> after (this checkout), same machine, same run")
    for name, a in after.items():
        b = before.get(name)
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        cpu_b, cpu_a = b["runs"][0]["cpu_per_session"], a["runs"][0]["cpu_per_session"]
        print(f"{name:24s} CPU/session at N=1 {100 * cpu_b:5.1f} % -> {100 * cpu_a:5.1f} % "
              f"(x{cpu_a / max(cpu_b, 1e-9):.2f}); sessions held {b['capacity']} -> "
              f"{a['capacity']}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--processes", default="1", help="process counts to try, e.g. 1,2")
    ap.add_argument("--batch", action="store_true", help="also run avatar sessions batched")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    ap.add_argument("--baseline", type=Path, help="another checkout to measure first")
    args = ap.parse_args()
    argv = list(sys.argv[1:])
    if args.baseline is not None:
        i = argv.index("--baseline")
        argv = argv[:i] + argv[i + 2 :]
        if "--out" in argv:
            j = argv.index("--out")
            argv = argv[:j] + argv[j + 2 :]
        before = run_baseline(args.baseline.resolve(), argv)
    cfg = load_config(overrides=[f"render.size={args.size}"])
    batched = load_config(overrides=[f"render.size={args.size}", "engine.batch.enabled=true"])
    print(f"machine: {machine()}; {args.size}x{args.size} at {cfg.motion.fps:g} fps, "
          f"{args.seconds:g} s per run")  # fmt: skip
    result: dict[str, Any] = {}
    for k in [int(x) for x in args.processes.split(",")]:
        variants = [("avatar", cfg, False)] + ([("avatar batched", batched, False)] if args.batch
                                               else []) + [("encode-only", cfg, True)]  # fmt: skip
        for kind, conf, static in variants:
            name = f"{kind}, {k} process{'es' if k > 1 else ''}"
            best, runs = find_capacity(conf, args.seconds, args.max, static=static, processes=k)
            show(name, best, runs, static)
            result[name] = {"capacity": best, "processes": k, "runs": [as_json(r) for r in runs]}
    print()
    for name, r in result.items():
        if name.startswith("encode-only"):
            continue
        base = result[f"encode-only, {name.split(', ')[1]}"]
        cpu_a, cpu_e = r["runs"][0]["cpu_per_session"], base["runs"][0]["cpu_per_session"]
        print(f"capacity {name} / encode-only: {r['capacity']} / {base['capacity']} = "
              f"{r['capacity'] / max(base['capacity'], 1):.2f}; CPU per session at N=1: "
              f"{100 * cpu_a:.1f} % vs {100 * cpu_e:.1f} % of a core "
              f"(x{cpu_a / max(cpu_e, 1e-9):.2f})")  # fmt: skip
    if args.baseline is not None:
        compare(before, result)
    if args.out:
        out = {"machine": machine(), **result}
        if args.baseline is not None:
            out["baseline"] = {"commit": _commit(args.baseline), **before}
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
