"""The browser path end to end: Debian Chromium (Playwright), fake microphone, ``avatar serve``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.audio.io import iter_audio
from avatar.testing import browser
from tests.conftest import WEIGHTS, write_wav
from tests.timeline import IN_FLIGHT, LOSS, TICK

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not browser.chromium_available(), reason="needs playwright + chromium"),
]
SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"
# the tests wait for so many presented frames (a second of video), not for a time; the limit
# is a safety net that a passing test never reaches
FRAMES = 25
SAFETY_MS = 30_000
MIC_LOOP_S = 10.5
# What the page presented, by the frames' own timestamps (requestVideoFrameCallback metadata:
# RTP timestamp, count of frames presented so far), and the receiver's counts.
MEDIA_JS = """() => {
  const video = document.getElementById('avatar-video');
  const media = (window.__media = []);
  window.__mediaSpan = () => media.length ? media.at(-1).media - media[0].media : 0;
  const onFrame = (now, meta) => {
    media.push({presented: meta.presentedFrames, media: meta.mediaTime, rtp: meta.rtpTimestamp});
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""
INBOUND_VIDEO_JS = """async () => {
  let found = null;
  (await window.avatarClient.pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') found = s;
  });
  return found;
}"""


def assert_presented(
    media: list[dict[str, Any]], received: dict[str, Any], server: dict[str, Any]
) -> None:
    """On the media timeline (RTP timestamps of the presented frames): every frame the server
    sent reached the page, and >= 90 % of the 25 fps slots were presented, less those the
    server or the page counted as late or dropped (a loaded machine's decisions)."""
    rtp = np.array([m["rtp"] for m in media], np.int64)
    assert np.all(np.diff(rtp) > 0) and np.all(np.diff(rtp) % TICK == 0), np.diff(rtp)[:20]
    slots = int((rtp[-1] - rtp[0]) // TICK + 1)
    presented = media[-1]["presented"] - media[0]["presented"] + 1
    excused = server["late"] + server["dropped"] + received["framesDropped"]
    assert presented + excused >= 0.9 * slots, (presented, slots, server, received)
    sent = server["frames"] - server["dropped"]
    assert received["framesReceived"] >= sent - IN_FLIGHT - LOSS * sent, (received, server)


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s silence, 4 s speech, 4 s silence at 48 kHz (Chromium loops it)."""
    speech = np.concatenate(list(iter_audio(SAMPLE, rate=48000, block_s=1.0)))[: 4 * 48000]
    quiet = np.zeros(2 * 48000, np.float32)
    audio = np.concatenate([quiet, speech, quiet, quiet])
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", audio, 48000)


@pytest.fixture(scope="module")
def server_url() -> object:
    with browser.serve_process() as url:
        yield url


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_demo_page_shows_the_avatar_speaking_with_the_microphone(
    server_url: str, mic_wav: Path, codec: str
) -> None:
    with browser.chromium_page(mic_wav) as page:
        browser.start_demo(page, server_url, codec=codec)
        page.evaluate(MEDIA_JS)
        # one loop of the microphone file, as media time the page presented (not wall time)
        page.wait_for_function(f"window.__mediaSpan() >= {MIC_LOOP_S}", timeout=60_000)
        samples = browser.frames(page)
        media = page.evaluate("window.__media")
        used = browser.codec_in_use(page)
        received = page.evaluate(INBOUND_VIDEO_JS)
        demo = page.evaluate("window.avatarDemo.lastStats")
    assert browser.wait_for_sessions(server_url, 0, timeout_s=10.0), "session not freed"
    assert used.lower() == f"video/{codec.lower()}"
    assert demo is not None
    assert_presented(media, received, demo)
    assert {(s["width"], s["height"]) for s in samples} == {(512, 512)}
    t = np.array([s["t"] for s in samples]) / 1000
    diff = np.array([s["diff"] for s in samples])
    # sliding 1 s windows of mouth change: speech windows move a lot, silent ones hardly
    starts = np.arange(t[0] + 1.0, t[-1] - 1.0, 0.25)
    level = np.array([np.percentile(diff[(t >= a) & (t < a + 1)], 90) for a in starts])
    active = level > 4.0
    assert level.max() > 8.0, level.round(1)  # the mouth moves during speech
    assert np.sort(level)[: len(level) // 4].mean() < 2.0, level.round(1)  # and rests
    assert 0.2 < active.mean() < 0.7, level.round(1)  # about 4 s of 10 are speech
    assert demo["frames"] + demo["late"] > 200  # the engine's ticks: 10 s of its clock


def test_demo_page_says_typed_text(server_url: str) -> None:
    with browser.chromium_page(None) as page:
        browser.start_demo(page, server_url, audio="none")
        page.wait_for_function(f"window.__avatarFrames.length >= {FRAMES}", timeout=SAFETY_MS)
        page.fill("#say-text", "Hello there. I speak the words you type, one sentence at a time.")
        clicked = page.evaluate("performance.now()")
        page.click("#say-button")
        page.wait_for_function(f"window.__avatarFrames.length >= {9 * FRAMES}", timeout=60_000)
        samples = browser.frames(page)
        shown_error = page.evaluate("document.getElementById('error').textContent")
    assert browser.wait_for_sessions(server_url, 0, timeout_s=10.0), "session not freed"
    assert not shown_error.strip(), shown_error
    t = (np.array([s["t"] for s in samples]) - clicked) / 1000
    diff = np.array([s["diff"] for s in samples])
    before, during, after = diff[t < 0], diff[(t > 1.0) & (t < 3.5)], diff[t > t[-1] - 1.5]
    assert np.percentile(during, 90) > 8.0, np.percentile(during, 90)  # the mouth speaks
    assert np.percentile(before, 90) < 2.0 and np.percentile(after, 90) < 2.0  # listens


def test_profile_overlay_and_in_browser_latency_probe() -> None:
    with browser.serve_process("--profile") as url, browser.chromium_page(None) as page:
        page.goto(f"{url}/?autostart=1&probe=1&codec=VP8")
        page.wait_for_function("window.avatarDemo && window.avatarDemo.probe", timeout=30_000)
        # beeps every 1.2-1.8 s: wait until five came back in displayed frames and three in the
        # received audio (not for a time)
        probed = "window.avatarDemo.e2e.length >= 5 && window.avatarDemo.probe.stats().avOffset"
        page.wait_for_function(
            f"{probed}.count >= 3 && window.avatarDemo.lastProfile", timeout=60_000
        )
        e2e = page.evaluate("window.avatarDemo.e2e")
        stats = page.evaluate("window.avatarDemo.probe.stats()")
        profile = page.evaluate("window.avatarDemo.lastProfile")
        hints = page.evaluate("window.avatarClient.jitterBuffer")
        sdp = page.evaluate("window.avatarClient.pc.remoteDescription.sdp")
    # Chromium accepted the playout-delay extension on video and the video receiver's hint
    video_sdp = sdp.split("m=video")[1].split("m=")[0]
    assert "rtp-hdrext/playout-delay" in video_sdp
    assert hints["video"] in ("jitterBufferTarget", "playoutDelayHint") and hints["audio"] is None
    # the probe also heard its beeps come back in the received audio (the A/V offset)
    assert stats["avOffset"]["count"] >= 3, stats
    # beeps every 1.2-1.8 s: each found in a displayed frame, timed on the browser's clock
    assert len(e2e) >= 5 and stats["missed"] <= 1, stats
    assert all(40 < x < 1000 for x in e2e), e2e
    assert profile is not None and profile["stages"]["encode"]["p50"] > 0
    # the server's share is smaller than what the browser measured end to end
    assert profile["latency_ms"]["p50"] < float(np.median(e2e))


def test_the_page_passes_its_token_to_a_server_that_requires_one(
    mic_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avatar.server.auth import mint_token

    secret = "browser-test-secret-0123456789"
    monkeypatch.setenv("AVATAR_SECRET", secret)
    token = mint_token(secret.encode(), 120, time.time(), "browser-test")
    with (
        browser.serve_process("--set", "server.auth.require_token=always") as url,
        browser.chromium_page(mic_wav) as page,
    ):
        page.goto(f"{url}/?autostart=1")  # no token: refused, and the page says why
        page.wait_for_function("document.body.innerText.includes('needs a token')", timeout=30_000)
        browser.start_demo(page, url, token=token)
        page.wait_for_function(f"window.__avatarFrames.length >= {FRAMES}", timeout=SAFETY_MS)


def test_the_page_talks_to_a_session_on_a_worker_through_the_front(mic_wav: Path) -> None:
    """``--workers 2``: the page's offer, ICE and socket go through the front; media flows
    straight between Chromium and the worker that holds the session."""
    with browser.serve_process("--workers", "2") as url:
        with browser.chromium_page(mic_wav) as page:
            browser.start_demo(page, url)
            page.wait_for_function(f"window.__avatarFrames.length >= {FRAMES}", timeout=SAFETY_MS)
            samples = browser.frames(page)
            session = page.evaluate("window.avatarClient.session")
        freed = browser.wait_for_sessions(url, 0, timeout_s=10.0)
    assert session.startswith(("w0.", "w1.")), session
    assert {(s["width"], s["height"]) for s in samples} == {(512, 512)}
    assert freed, "the session was not freed on its worker after the tab closed"
