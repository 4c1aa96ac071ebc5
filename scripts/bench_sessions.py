"""Largest number of concurrent live sessions this machine holds, against an encode-only baseline.

    python scripts/bench_sessions.py [--seconds 10] [--max 12] [--size 512]

Each session is the server's per-peer work in real time (avatar.compose.capacity: engine +
colour conversion + aiortc's VP8 encoder, no network). Prints, for N = 1, 2, ... until more than
1 % of frames are late: late share, CPU per session (share of one core) and, for the avatar
sessions, per-stage p50 ms; then both capacities and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avatar.compose.capacity import find_capacity
from avatar.compose.profile import machine
from avatar.config import load_config
from avatar.profile.log import STAGES


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max", type=int, default=12)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    cfg = load_config(overrides=[f"render.size={args.size}"])
    print(f"machine: {machine()}; {args.size}x{args.size} at {cfg.motion.fps:g} fps, "
          f"{args.seconds:g} s per run")  # fmt: skip
    result = {}
    for kind, static in (("avatar", False), ("encode-only", True)):
        best, runs = find_capacity(cfg, args.seconds, args.max, static=static)
        print(f"\n{kind} sessions")
        head = "  N  late %  CPU/session" + (
            "".join(f"{s:>9}" for s in STAGES) if not static else ""
        )
        print(head)
        for r in runs:
            stages = "".join(
                f"{(r.stages.get(s) or {}).get('p50', float('nan')):9.2f}" for s in STAGES
            ) if not static else ""  # fmt: skip
            print(f"{r.sessions:3d} {100 * r.late_share:7.2f} {100 * r.cpu_per_session:10.1f} %"
                  f"{stages}")  # fmt: skip
        print(f"=> {kind}: {best} sessions with <= 1 % late frames")
        result[kind] = {"capacity": best, "runs": [
            {"sessions": r.sessions, "late_share": r.late_share,
             "cpu_per_session": r.cpu_per_session, "stages": r.stages} for r in runs]}  # fmt: skip
    a, e = result["avatar"]["capacity"], result["encode-only"]["capacity"]
    cpu_a = result["avatar"]["runs"][0]["cpu_per_session"]
    cpu_e = result["encode-only"]["runs"][0]["cpu_per_session"]
    print(
        f"\ncapacity avatar / encode-only: {a} / {e} = {a / max(e, 1):.2f}; "
        f"CPU per session at N=1: {100 * cpu_a:.1f} % vs {100 * cpu_e:.1f} % of a core "
        f"(x{cpu_a / max(cpu_e, 1e-9):.2f})"
    )
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
