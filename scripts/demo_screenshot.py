"""Screenshot of the demo page in headless Chromium with the avatar mid-word.

    python scripts/demo_screenshot.py [-o docs/img/demo.png] [--avatar default] [--codec VP8]

Starts ``avatar serve`` on loopback, feeds Chromium's fake microphone with the bundled speech and
takes the screenshot on a frame whose mouth is moving fast (mid-word).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from avatar.audio.io import iter_audio
from avatar.audio.write import encode_audio
from avatar.face.store import load_avatar
from avatar.testing import browser

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "docs/img/demo.png")
    ap.add_argument("--avatar", default="default")
    ap.add_argument("--codec", default="VP8")
    args = ap.parse_args()
    speech = np.concatenate(list(iter_audio(ROOT / "avatar/assets/sample.ogg", rate=48000)))
    audio = np.concatenate([np.zeros(48000, np.float32), speech])
    with tempfile.TemporaryDirectory() as tmp:
        wav = encode_audio(Path(tmp) / "mic.wav", "pcm_s16le", audio, 48000, "s16")
        with browser.serve_process() as url, browser.chromium_page(wav) as page:
            browser.start_demo(page, url, codec=args.codec, avatar=args.avatar)
            time.sleep(2.5)  # into the speech
            box = page.locator("#avatar-video").bounding_box()
            mouth = load_avatar(args.avatar).info["mouth_box"]
            best, best_open = b"", -1.0
            for _ in range(25):  # keep the shot whose mouth is the most open (dark cavity)
                png = page.screenshot()
                shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
                scale = box["width"] / load_avatar(args.avatar).size
                x0, y0, x1, y1 = (round(v * scale) for v in mouth)
                ox, oy = round(box["x"]), round(box["y"])
                openness = float((shot[oy + y0 : oy + y1, ox + x0 : ox + x1] < 60).mean())
                if openness > best_open:
                    best, best_open = png, openness
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(best)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
