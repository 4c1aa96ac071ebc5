"""Largest number of concurrent live sessions this machine holds, against an encode-only baseline.

    python scripts/bench_sessions.py [--seconds 10] [--max 12] [--size 512] [--workers 1,2]
                                     [--speech continuous,duty] [--batch] [--baseline DIR]
                                     [--set KEY=VALUE ...]

Each session is the server's per-peer work in real time (avatar.compose.capacity: engine +
colour conversion + aiortc's VP8 encoder with the server's settings, no network). Sessions say
one of two things (``--speech``, both by default): *continuous* speech (the sample with 1 s
pauses, looped), or a *duty* cycle as in a call, talk turns of 3-8 s and as long listening to a
microphone's noise floor, about half the time talking, each session on its own schedule; while
it listens the speech gate sleeps the model and only every ``engine.idle_render_every``-th frame
is rendered, so this is the capacity operators meet. For each worker count (``--workers K``
spreads sessions over K processes as ``avatar serve --workers K`` does) and speech mode it
prints, for N = 1, 2, ... until more than 1 % of frames are late: late share, the share of frames
in which the avatar spoke, CPU per session (share of one core) and, for the avatar sessions,
per-stage p50 ms; then the capacities and their ratios. ``--batch`` adds avatar runs with
cross-session batching (``engine.batch.enabled``). ``--baseline DIR`` first runs the same
benchmark from another checkout (its own script and package, e.g. a ``git worktree`` of an older
commit) in a child process, with the flags that script knows (an older one measures continuous
speech only, over ``--processes``), then this one, and prints CPU per session at N=1 and
capacity side by side: before/after in one run on one machine.
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

from avatar.compose.capacity import SPEECH_MODES, RunResult, find_capacity
from avatar.compose.profile import machine
from avatar.config import load_config
from avatar.profile.log import STAGES


def show(kind: str, best: int, runs: list[RunResult], static: bool) -> None:
    print(f"\n{kind} sessions")
    head = "" if static else "  talk %" + "".join(f"{s:>9}" for s in STAGES)
    print(f"  N  late %  CPU/session{head}")
    for r in runs:
        stages = f"{100 * r.talking_share:8.1f}" + "".join(
            f"{(r.stages.get(s) or {}).get('p50', float('nan')):9.2f}" for s in STAGES
        ) if not static else ""  # fmt: skip
        print(
            f"{r.sessions:3d} {100 * r.late_share:7.2f} {100 * r.cpu_per_session:10.1f} %{stages}"
        )
    print(f"=> {kind}: {best} sessions with <= 1 % late frames")


def as_json(r: RunResult) -> dict[str, Any]:
    return {"sessions": r.sessions, "late_share": r.late_share,
            "cpu_per_session": r.cpu_per_session, "talking_share": r.talking_share,
            "stages": r.stages}  # fmt: skip


def key(name: str, entry: dict[str, Any]) -> tuple[str, int, str]:
    """(kind, workers, speech) of a result; an older script's JSON has ``processes`` and no
    speech mode (it measured continuous speech)."""
    workers = entry.get("workers", entry.get("processes", 1))
    return entry.get("kind", name.split(", ")[0]), workers, entry.get("speech") or "continuous"


def baseline_argv(script: Path, env: dict[str, str], args: argparse.Namespace) -> list[str]:
    """This run's flags as the baseline's script knows them (from its ``--help``)."""
    known = subprocess.run([sys.executable, str(script), "--help"], env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    argv = ["--seconds", str(args.seconds), "--max", str(args.max), "--size", str(args.size)]
    workers = "--workers" if "--workers" in known else "--processes"
    if workers in known:
        argv += [workers, args.workers]
    elif args.workers != "1":
        print("baseline: its script runs one process only", flush=True)
    if "--speech" in known:
        argv += ["--speech", args.speech]
    else:
        print("baseline: its script has no --speech; it measures continuous speech", flush=True)
    if args.set and "--set" in known:
        argv += [a for kv in args.set for a in ("--set", kv)]
    elif args.set:
        print("baseline: its script has no --set; it measures the default configuration")
    return argv + (["--batch"] if args.batch else [])


def run_baseline(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline checkout's own benchmark (its script, its package) in a child process."""
    script = code / "scripts" / "bench_sessions.py"
    env = {**os.environ, "PYTHONPATH": str(code)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        cmd = [sys.executable, str(script), *baseline_argv(script, env, args), "--out", str(out)]
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
    old = {key(n, b): b for n, b in before.items() if isinstance(b, dict) and "runs" in b}
    for name, a in after.items():
        b = old.get(key(name, a)) if isinstance(a, dict) else None
        if b is None:
            print(f"{name:40s} (not in the baseline)")
            continue
        cpu_b, cpu_a = b["runs"][0]["cpu_per_session"], a["runs"][0]["cpu_per_session"]
        print(f"{name:40s} CPU/session at N=1 {100 * cpu_b:5.1f} % -> {100 * cpu_a:5.1f} % "
              f"(x{cpu_a / max(cpu_b, 1e-9):.2f}); sessions held {b['capacity']} -> "
              f"{a['capacity']}")  # fmt: skip


def measure(args: argparse.Namespace, modes: list[str]) -> dict[str, Any]:
    overrides = [f"render.size={args.size}", *args.set]
    cfg = load_config(overrides=overrides)
    batched = load_config(overrides=[*overrides, "engine.batch.enabled=true"])
    print(f"machine: {machine()}; {args.size}x{args.size} at {cfg.motion.fps:g} fps, "
          f"{args.seconds:g} s per run; in silence 1 frame in "
          f"{cfg.engine.idle_render_every} is rendered")  # fmt: skip
    result: dict[str, Any] = {}
    for k in [int(x) for x in args.workers.split(",")]:
        workers = f"{k} worker{'s' if k > 1 else ''}"
        variants = [("avatar", cfg, False, m) for m in modes]
        variants += [("avatar batched", batched, False, m) for m in modes] if args.batch else []
        for kind, conf, static, speech in [*variants, ("encode-only", cfg, True, "")]:
            name = f"{kind}, {speech} speech, {workers}" if speech else f"{kind}, {workers}"
            best, runs = find_capacity(conf, args.seconds, args.max, static=static, processes=k,
                                       speech=speech or "continuous")  # fmt: skip
            show(name, best, runs, static)
            result[name] = {"kind": kind, "workers": k, "speech": speech or None,
                            "capacity": best, "runs": [as_json(r) for r in runs]}  # fmt: skip
    return result


def ratios(result: dict[str, Any]) -> None:
    print()
    for name, r in result.items():
        if r["kind"] == "encode-only":
            continue
        base = next(b for b in result.values()
                    if b["kind"] == "encode-only" and b["workers"] == r["workers"])  # fmt: skip
        cpu_a, cpu_e = r["runs"][0]["cpu_per_session"], base["runs"][0]["cpu_per_session"]
        frames = [(x["talking_share"], x["sessions"]) for x in r["runs"]]
        talk = sum(share * n for share, n in frames) / sum(n for _, n in frames)
        print(f"capacity {name} / encode-only: {r['capacity']} / {base['capacity']} = "
              f"{r['capacity'] / max(base['capacity'], 1):.2f}; CPU per session at N=1: "
              f"{100 * cpu_a:.1f} % vs {100 * cpu_e:.1f} % of a core "
              f"(x{cpu_a / max(cpu_e, 1e-9):.2f}); "
              f"talking in {100 * talk:.0f} % of frames")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", default="1", help="worker process counts to try, e.g. 1,2")
    ap.add_argument("--processes", dest="workers", help=argparse.SUPPRESS)  # its old name
    ap.add_argument("--speech", default=",".join(SPEECH_MODES),
                    help="speech modes, of: continuous (talking throughout), duty (a call: "
                         "talk turns and listening, about half and half)")  # fmt: skip
    ap.add_argument("--batch", action="store_true", help="also run avatar sessions batched")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="configuration override, e.g. render.avatar=carphone")  # fmt: skip
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    ap.add_argument("--baseline", type=Path, help="another checkout to measure first")
    args = ap.parse_args()
    modes = args.speech.split(",")
    if unknown := [m for m in modes if m not in SPEECH_MODES]:
        ap.error(f"--speech {','.join(unknown)}: use {','.join(SPEECH_MODES)}")
    before = run_baseline(args.baseline.resolve(), args) if args.baseline is not None else {}
    result = measure(args, modes)
    ratios(result)
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
