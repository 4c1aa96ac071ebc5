"""Microphone -> screen latency measured in headless Chromium, on the browser's own clock.

    python scripts/bench_browser_latency.py [--seconds 30] [--codec VP8] [--overlay PNG]
    python scripts/bench_browser_latency.py --seconds 30 --rounds 2 \\
        --variant "stock:server.playout_delay_ms=null;server.encoder.vp8={}:jb_video=off" \\
        --variant "shipped::"

Starts ``avatar serve --profile`` on loopback and opens the demo page with ``?probe=1``: the page
sends beeps through WebAudio instead of a microphone, notes each onset as it enters the outgoing
track, and finds the first displayed frame that carries it (the server marks frames whose own
audio is loud) with requestVideoFrameCallback. Prints p50/p95 of those end-to-end samples, the
server's own latency and the time Chromium held audio and video in its jitter buffers.

Each ``--variant NAME:SETS:QUERY`` is one configuration (``SETS``: server overrides joined by
``;``; ``QUERY``: extra demo-page parameters, e.g. ``jb_video=0``); ``--rounds`` runs all variants
that many times, interleaved, and the summary pools each variant's beeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar.compose.profile import machine
from avatar.testing import browser

# Chromium's receive-side figures per media kind: mean ms held in the jitter buffer (A/V sync
# included), its target, and whether the playout-delay extension was negotiated for video.
STATS_JS = """async () => {
  const out = {};
  const pc = window.avatarClient.pc;
  (await pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.jitterBufferEmittedCount) {
      const n = s.jitterBufferEmittedCount;
      out[s.kind] = {held_ms: Math.round(1000 * s.jitterBufferDelay / n),
                     target_ms: Math.round(1000 * (s.jitterBufferTargetDelay || 0) / n)};
    }
  });
  const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : '';
  out.playout_delay_ext = sdp.includes('rtp-hdrext/playout-delay');
  out.receiver_hints = window.avatarClient.jitterBuffer || null;
  return out;
}"""


@dataclass
class Variant:
    name: str
    sets: list[str]
    query: str
    samples: list[float] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    name, sets, query = [*text.split(":", 2), "", ""][:3]
    return Variant(name, [s for s in sets.split(";") if s], query)


def measure(v: Variant, seconds: float, codec: str, overlay: Path | None) -> dict[str, Any]:
    extra = [a for kv in v.sets for a in ("--set", kv)]
    query = f"autostart=1&probe=1&codec={codec}" + (f"&{v.query}" if v.query else "")
    with browser.serve_process("--profile", *extra) as url, browser.chromium_page(None) as page:
        page.goto(f"{url}/?{query}")
        page.wait_for_function("window.avatarDemo && window.avatarDemo.probe", timeout=30_000)
        time.sleep(seconds)
        e2e = [float(x) for x in page.evaluate("window.avatarDemo.e2e")]
        probe = page.evaluate("window.avatarDemo.probe.stats()")
        profile = page.evaluate("window.avatarDemo.lastProfile")
        chromium = page.evaluate(STATS_JS)
        if overlay:
            overlay.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(overlay), full_page=True)
    server = (profile or {}).get("latency_ms", {})
    return {"samples_ms": e2e, "missed": probe.get("missed", 0), "server_ms": server,
            "chromium": chromium, "av_offset_ms": probe.get("avOffset")}  # fmt: skip


def describe(run: dict[str, Any]) -> str:
    e2e = run["samples_ms"]
    p50, p95 = np.percentile(e2e, [50, 95]) if e2e else (float("nan"),) * 2
    c, server = run["chromium"], run["server_ms"]
    av = run.get("av_offset_ms") or {}
    held = ", ".join(f"{k} {c[k]['held_ms']} (target {c[k]['target_ms']})"
                     for k in ("audio", "video") if k in c)  # fmt: skip
    return (f"p50 {p50:.0f} / p95 {p95:.0f} ms over {len(e2e)} beeps ({run['missed']} missed); "
            f"A/V (sound after picture) p50 {_ms(av.get('p50'))} ms over {av.get('count')}; "
            f"server p50 {server.get('p50')} / p95 {server.get('p95')} ms; Chromium held ms: "
            f"{held}; playout-delay ext {c.get('playout_delay_ext')}, hints "
            f"{c.get('receiver_hints')}")  # fmt: skip


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--codec", default="VP8")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variant", action="append", default=[], help="NAME:SETS:QUERY")
    ap.add_argument("--overlay", type=Path, help="save a screenshot of the page here")
    ap.add_argument("--out", type=Path, help="also write the samples as JSON")
    ap.add_argument("--set", action="append", default=[], help="server config override")
    args = ap.parse_args()
    variants = [parse_variant(t) for t in args.variant] or [Variant("default", args.set, "")]
    print(f"machine: {machine()}; Chromium headless, loopback, {args.codec}, 512x512 at 25 fps")
    for r in range(args.rounds):
        for v in variants:
            run = measure(v, args.seconds, args.codec, args.overlay)
            v.samples += run["samples_ms"]
            v.runs.append(run)
            print(f"[round {r + 1}] {v.name}: {describe(run)}", flush=True)
    print("\nmic -> screen (browser clock), all rounds pooled:")
    for v in variants:
        if v.samples:
            p50, p95 = np.percentile(v.samples, [50, 95])
            av = [r["av_offset_ms"]["p50"] for r in v.runs if (r["av_offset_ms"] or {}).get("p50")]
            print(f"  {v.name:>12}: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({len(v.samples)} beeps); "
                  f"A/V p50 per run {[round(a) for a in av]} ms")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "variants": [
            {"name": v.name, "sets": v.sets, "query": v.query, "runs": v.runs} for v in variants
        ]}, indent=1))  # fmt: skip
    return 0 if all(v.samples for v in variants) else 1


if __name__ == "__main__":
    sys.exit(main())
