"""Fuzz every input surface of ``avatar serve`` while a real session streams, and count.

    python scripts/fuzz_server.py --examples 1000 [--surfaces offer_sdp,ws_audio] [--seed 7]

The same strategies and driver as ``tests/test_fuzz.py`` (:mod:`tests.fuzz_surfaces`,
:mod:`tests.fuzz_harness`), with a bigger budget and nothing asserted: it prints the inputs tried
per surface, the status (or socket outcome) histogram per surface, the commonest refusal
messages, every 5xx, every logged traceback (grouped by where it was raised, with the first input
that led to it), 4xx answers that are not JSON ``{"error"}``, sessions that died or were left
open, and the healthy session's received fps and longest gap. Without ``--seed`` the inputs are
those of the test (derandomized).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.fuzz_harness import Finding, FuzzHarness, running_harness
from tests.fuzz_surfaces import SURFACES, fuzz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=500, help="hypothesis inputs per surface")
    ap.add_argument("--surfaces", default=",".join(SURFACES), help="comma-separated")
    ap.add_argument("--seed", type=int, default=None, help="other inputs than the test's")
    args = ap.parse_args()
    surfaces = [s for s in args.surfaces.split(",") if s]
    unknown = set(surfaces) - set(SURFACES)
    if unknown:
        ap.error(f"unknown surfaces {sorted(unknown)}: choose from {', '.join(SURFACES)}")
    healthy_s = 60 + 0.1 * args.examples * len(surfaces)
    t0 = time.monotonic()
    with running_harness(healthy_s) as h:
        for surface in surfaces:
            fuzz(h, surface, args.examples, strict=False, seed=args.seed)
            print(f"{surface}: {h.tally.examples[surface]} inputs", flush=True)
        report(h, surfaces)
    print(f"\nwall time {time.monotonic() - t0:.0f} s")


def report(h: FuzzHarness, surfaces: list[str]) -> None:
    tally = h.tally
    print(f"\n{'surface':<14}{'inputs':>8}{'messages':>10}{'seconds':>9}  statuses / outcomes")
    for s in surfaces:
        hist = ", ".join(f"{k}: {n}" for k, n in sorted(tally.outcomes.get(s, {}).items()))
        msgs = tally.messages[s] or "-"
        print(f"{s:<14}{tally.examples[s]:>8}{msgs:>10}{tally.seconds[s]:>9.1f}  {hist}")
    print("\ncommonest refusals (JSON error messages, cut before what the input put in them):")
    for s in surfaces:
        for reason, n in tally.reasons.get(s, Counter()).most_common(4):
            print(f"  {s:<14}{n:>6}  {reason}")
    print(f"\n5xx answers: {len(tally.server_errors)}")
    show_first(tally.server_errors, lambda f: (f.surface, f.detail[:60]))
    tracebacks = h.faults.tracebacks()
    print(f"\nlogged tracebacks: {len(tracebacks)}")
    show_first(tracebacks, lambda f: f.detail.splitlines()[0], tail=6)
    others = Counter(
        (r.name, r.levelname, r.getMessage().splitlines()[0][:90])
        for _, _, r in h.faults.records
        if not r.exc_info
    )
    print(f"\nother WARNING+ records: {sum(others.values())}")
    for (name, level, message), n in others.most_common(8):
        print(f"  {n:>5}  {level} [{name}] {message}")
    print(f"\n4xx that are not JSON {{'error'}}: {len(tally.off_contract)}")
    show_first(tally.off_contract, lambda f: (f.surface, f.detail.split(":", 1)[0],
                                              f.detail.split(":", 1)[1][:24]))  # fmt: skip
    print(f"\nsessions died, left open, or stopped answering: {len(tally.lost)}")
    show_first(tally.lost, lambda f: (f.surface, re.sub(r"(?<= )\d+(?= )", "N", f.detail[:60])))
    stream = h.healthy_stream()
    print(f"\nhealthy session: connected={stream.connected}, {stream.frames} frames in "
          f"{stream.seconds:.1f} s = {stream.fps:.1f} fps received, longest gap "
          f"{stream.max_gap_s * 1000:.0f} ms")  # fmt: skip


def show_first(findings: list[Finding], key: Callable[[Finding], object], tail: int = 0) -> None:
    """Each kind once: how often, the first input that led to it, and what happened (its first
    two lines, and the last ``tail`` lines: a traceback's end)."""
    groups: dict[object, list[Finding]] = {}
    for f in findings:
        groups.setdefault(key(f), []).append(f)
    for group in groups.values():
        first = group[0]
        print(f"  x{len(group)} on {first.surface}; first input: {first.input[:300]}")
        lines = first.detail.splitlines()
        shown = lines[:2] + (["...", *lines[-tail:]] if tail and len(lines) > 2 else [])
        for line in shown:
            print(f"      {line[:240]}")


if __name__ == "__main__":
    main()
