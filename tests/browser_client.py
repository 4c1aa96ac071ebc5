"""A headless Chromium run in its own network namespace by ``tests/test_cluster_lab.py``: the
demo page through a pool's gateway, one JSON line per step on stdout.

    python -m tests.browser_client URL --mic WAV [--frames 25]

``streaming``: the page shows frames (its session id, the ICE pair's candidate types); then, after
a line on stdin (the test has stopped the session's node), ``moved``: the page's 'moved' event and
that it went on presenting frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from avatar.testing import browser

PAIR_JS = """async () => {
  const stats = await window.avatarClient.pc.getStats();
  let pair = null;
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId), remote = byId.get(pair.remoteCandidateId);
  return {local: local.candidateType, remote: remote.candidateType, remote_ip: remote.address};
}"""


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--mic", type=Path, required=True)
    p.add_argument("--frames", type=int, default=25)
    args = p.parse_args(argv)
    with browser.chromium_page(args.mic, secure_origins=[args.url]) as page:
        browser.start_demo(page, args.url)
        page.evaluate(
            "() => { window.__moves = []; avatarClient.on('moved', (e) => __moves.push(e)); }"
        )
        page.wait_for_function(f"window.__avatarFrames.length >= {args.frames}", timeout=60_000)
        say(event="streaming", session=page.evaluate("avatarClient.session"),
            pair=page.evaluate(PAIR_JS))  # fmt: skip
        sys.stdin.readline()
        page.wait_for_function("window.__moves.length >= 1", timeout=60_000)
        shown = page.evaluate("window.__avatarFrames.length")
        page.wait_for_function(f"window.__avatarFrames.length >= {shown + args.frames}",
                               timeout=60_000)  # fmt: skip
        say(event="moved", move=page.evaluate("window.__moves[0]"), pair=page.evaluate(PAIR_JS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
