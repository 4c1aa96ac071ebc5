"""Drive the demo page in a real headless Chromium (tests, screenshots, browser measurements).

Needs the ``dev`` extra (``playwright``) and Debian's ``chromium`` (``scripts/setup_system.sh``);
Playwright's own browser download is never used. Chromium's fake microphone plays a 48 kHz wav
(it loops it). Debian's Chromium offers no usable ICE candidate on loopback without
``--allow-loopback-in-peer-connection`` (measured here), so it is always passed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("AVATAR_CHROMIUM", "/usr/bin/chromium")

# Per presented frame: the page's clock, frames presented so far, and the mean change of the
# avatar's mouth box since the previous frame (grey levels).
COLLECTOR_JS = """
([x0, y0, x1, y1]) => {
  const video = document.getElementById('avatar-video');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth || 512; canvas.height = video.videoHeight || 512;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const sx = canvas.width / 512;
  const [bx, by, bw, bh] = [x0 * sx, y0 * sx, (x1 - x0) * sx, (y1 - y0) * sx].map(Math.round);
  const frames = (window.__avatarFrames = []);
  let prev = null;
  const onFrame = (now, meta) => {
    g.drawImage(video, 0, 0, canvas.width, canvas.height);
    const px = g.getImageData(bx, by, bw, bh).data;
    const grey = new Float32Array(bw * bh);
    for (let i = 0; i < grey.length; i++) grey[i] = (px[4*i] + px[4*i+1] + px[4*i+2]) / 3;
    let diff = 0;
    if (prev) { for (let i = 0; i < grey.length; i++) diff += Math.abs(grey[i] - prev[i]); }
    frames.push({t: now, presented: meta.presentedFrames, diff: prev ? diff / grey.length : 0,
                 width: meta.width, height: meta.height});
    prev = grey;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}
"""


def chromium_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(*args: str, timeout_s: float = 60.0) -> Iterator[str]:
    """``avatar serve`` on loopback in a child process; yields its base URL."""
    with server_process(*args, timeout_s=timeout_s) as server:
        yield server.url


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[str]
    log: collections.deque[str]  # its last output lines (read by a thread: it never blocks)


@contextlib.contextmanager
def server_process(*args: str, timeout_s: float = 60.0) -> Iterator[ServerProcess]:
    """The same, yielding the process and its log too."""
    port = free_port()
    cmd = [sys.executable, "-m", "avatar.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--ice-host", "127.0.0.1", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("avatar serve:"):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"avatar serve did not start: {line.strip()}")
        else:
            raise RuntimeError(f"avatar serve exited ({proc.wait()}) before it started")
        log: collections.deque[str] = collections.deque(maxlen=2000)
        threading.Thread(target=log.extend, args=(proc.stdout,), daemon=True).start()
        yield ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(40)  # the server lets open sessions drain on SIGTERM (drain_s)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium_page(mic_wav: Path | None, secure_origins: Sequence[str] = ()) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium, fake microphone fed from ``mic_wav``;
    ``secure_origins``: plain-HTTP origins the page may use the microphone on (as on loopback)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="avatar-chromium-")
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
    ]  # fmt: skip
    if mic_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    if secure_origins:
        args.append(f"--unsafely-treat-insecure-origin-as-secure={','.join(secure_origins)}")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=args,
                viewport={"width": 1180, "height": 760},
            )  # fmt: skip
            try:
                yield ctx.pages[0] if ctx.pages else ctx.new_page()
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def start_demo(
    page: Any, url: str, codec: str = "VP8", avatar: str = "default", token: str = "",
    audio: str = "mic",
) -> None:  # fmt: skip
    """Open the demo page, let it connect, and start collecting per-frame mouth changes."""
    from avatar.face.store import load_avatar

    query = f"autostart=1&avatar={avatar}&codec={codec}&audio={audio}"
    query += f"&token={token}" if token else ""
    page.goto(f"{url}/?{query}")
    page.wait_for_function("window.avatarClient && window.avatarDemo", timeout=30_000)
    page.wait_for_function("document.getElementById('avatar-video').videoWidth > 0", timeout=30_000)
    assets = load_avatar(avatar)
    box = [round(v * 512 / assets.size) for v in assets.info["mouth_box"]]
    page.evaluate(COLLECTOR_JS, box)


def wait_for_sessions(url: str, count: int, timeout_s: float) -> bool:
    """Poll ``/api/health`` until the server holds ``count`` sessions."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/health", timeout=5) as r:
            if json.load(r)["sessions"] == count:
                return True
        time.sleep(0.2)
    return False


def frames(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate("window.__avatarFrames"))


def codec_in_use(page: Any) -> str:
    """The received video codec from the page's WebRTC stats (e.g. ``video/VP8``)."""
    js = """async () => {
      const stats = await window.avatarClient.pc.getStats();
      let codecId = null, mime = '';
      stats.forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') codecId = s.codecId;
      });
      stats.forEach(s => { if (s.id === codecId) mime = s.mimeType; });
      return mime;
    }"""
    return str(page.evaluate(js))
