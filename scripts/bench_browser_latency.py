"""Microphone -> screen latency measured in headless Chromium, on the browser's own clock.

    python scripts/bench_browser_latency.py [--seconds 30] [--codec VP8] [--overlay PNG]

Starts ``avatar serve --profile`` on loopback and opens the demo page with ``?probe=1``: the page
sends beeps through WebAudio instead of a microphone, notes each onset as it enters the outgoing
track, and finds the first displayed frame that carries it (the server marks frames whose own
audio is loud) with requestVideoFrameCallback. Prints p50/p95 of those end-to-end samples and the
server's own latency over the same run; optionally saves a screenshot of the page's overlay.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from avatar.compose.profile import machine
from avatar.server import browser

# Average time Chromium held each media kind in its jitter buffer (A/V sync included).
JITTER_JS = """async () => {
  const out = {};
  (await window.avatarClient.pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.jitterBufferEmittedCount)
      out[s.kind] = Math.round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount);
  });
  return out;
}"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--codec", default="VP8")
    ap.add_argument("--overlay", type=Path, help="save a screenshot of the page here")
    ap.add_argument("--out", type=Path, help="also write the samples as JSON")
    ap.add_argument("--set", action="append", default=[], help="server config override")
    args = ap.parse_args()
    extra = [a for kv in args.set for a in ("--set", kv)]
    with browser.serve_process("--profile", *extra) as url, browser.chromium_page(None) as page:
        page.goto(f"{url}/?autostart=1&probe=1&codec={args.codec}")
        page.wait_for_function("window.avatarDemo && window.avatarDemo.probe", timeout=30_000)
        time.sleep(args.seconds)
        e2e = [float(x) for x in page.evaluate("window.avatarDemo.e2e")]
        probe = page.evaluate("window.avatarDemo.probe.stats()")
        profile = page.evaluate("window.avatarDemo.lastProfile")
        buffers = page.evaluate(JITTER_JS)
        if args.overlay:
            args.overlay.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.overlay), full_page=True)
    if not e2e:
        print("no end-to-end samples: is the probe's marker visible?", file=sys.stderr)
        return 1
    p50, p95 = np.percentile(e2e, [50, 95])
    server = (profile or {}).get("latency_ms", {})
    print(f"machine: {machine()}; Chromium headless, loopback, {args.codec}, 512x512 at 25 fps")
    print(f"mic -> screen (browser clock): p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(e2e)} "
          f"beeps ({probe.get('missed', 0)} missed); server latency last second: "
          f"p50 {server.get('p50')} / p95 {server.get('p95')} ms")  # fmt: skip
    print(f"Chromium jitter buffers (mean ms held): {buffers}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"samples_ms": e2e, "p50": p50, "p95": p95, "probe": probe, "machine": machine()},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
