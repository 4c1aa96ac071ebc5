"""The render page (``avatar/web/renders.html``) end to end: Debian Chromium (Playwright) on a
real ``avatar serve`` that runs its render jobs in-process, results in a temporary folder."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avatar.testing import browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not browser.chromium_available(), reason="needs playwright + chromium"),
]
TEXT = "Hello there. This is a short test."
# longer than the time it takes to press Cancel (the render stops at its next frame)
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
SCREENSHOT = Path("/tmp/renders_page.png")
RENDER_MS = 120_000  # a safety net: the short text renders in a few seconds
FINAL_JS = "['done', 'failed', 'cancelled'].includes(document.body.dataset.state)"
PLAY_JS = """async () => {
  const video = document.getElementById('result-video');
  video.muted = true;
  await video.play();
  return video.currentTime;
}"""
VIDEO_JS = """() => {
  const v = document.getElementById('result-video');
  return {readyState: v.readyState, duration: v.duration, currentTime: v.currentTime,
          paused: v.paused, width: v.videoWidth, height: v.videoHeight, error: v.error?.message,
          hidden: v.hidden};
}"""


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("renders")
    with browser.serve_process("--set", f"renders.store={store}") as url:
        yield url


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def open_page(page: Any, url: str) -> None:
    page.goto(f"{url}/renders.html")
    page.wait_for_function("window.rendersPage && window.rendersPage.options", timeout=30_000)


def test_the_page_renders_text_and_plays_the_result(server_url: str) -> None:
    with browser.chromium_page(None) as page:
        open_page(page, server_url)
        avatars = page.eval_on_selector_all("#avatar-select option", "os => os.map(o => o.value)")
        fps = page.input_value("#fps-select")
        page.fill("#text-input", TEXT)
        page.click("#submit-button")
        submitting = page.is_disabled("#submit-button")
        page.wait_for_function(FINAL_JS, timeout=RENDER_MS)
        state = page.evaluate("document.body.dataset.state")
        assert state == "done", page.inner_text("#error")
        job = page.evaluate("window.rendersPage.job")
        seen = page.evaluate("window.rendersPage.seen")
        bar = page.eval_on_selector(
            "#job-progress", "p => ({value: p.value, max: p.max, ...p.dataset})"
        )
        buttons = {b: page.is_disabled(f"#{b}-button") for b in ("submit", "cancel")}
        download = page.get_attribute("#download-link", "href")
        page.wait_for_function(
            "document.getElementById('result-video').readyState >= 2", timeout=30_000
        )
        before = page.evaluate(VIDEO_JS)
        started_at = page.evaluate(PLAY_JS)
        page.wait_for_function(
            f"document.getElementById('result-video').currentTime > {started_at} + 0.5",
            timeout=10_000,
        )
        playing = page.evaluate(VIDEO_JS)
        page.screenshot(path=str(SCREENSHOT))
    # the form came from /v1/render-options; the button stayed down while the job ran
    assert "default" in avatars and fps == "25"
    assert submitting and buttons == {"submit": False, "cancel": True}
    # the page polled: queued on submission, done at the end; the bar filled to its total
    total = job["progress"]["total"]
    assert seen[0]["status"] == "queued" and seen[-1]["status"] == "done", seen
    assert total > 25 and job["progress"]["frames"] == total, job
    assert any(s["value"] == s["max"] == s["total"] == total for s in seen), seen
    frames = [s["frames"] for s in seen]
    assert frames == sorted(frames), seen
    assert bar == {"value": total, "max": total, "frames": str(total), "total": str(total)}, bar
    # the result: the video plays, as long as the speech (frames at the job's fps)
    assert download is not None and download.endswith(f"/v1/renders/{job['id']}/result")
    with urllib.request.urlopen(download, timeout=10) as r:
        head = r.read(12)
    assert head[4:8] == b"ftyp", head  # an mp4
    assert not before["hidden"] and before["error"] is None, before
    assert before["readyState"] >= 2 and before["width"] > 0, before
    speech_s = total / 25
    assert before["duration"] > 1.0, before
    assert abs(before["duration"] - speech_s) < 0.25, (before, speech_s)
    assert not playing["paused"] and playing["currentTime"] > started_at + 0.5, playing


def test_the_page_shows_the_servers_error_for_empty_text(server_url: str) -> None:
    status, body = post_json(f"{server_url}/v1/renders", {"text": ""})
    assert status == 422 and body["error"], body
    with browser.chromium_page(None) as page:
        open_page(page, server_url)
        page.fill("#text-input", "")
        page.click("#submit-button")
        page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        shown = page.inner_text("#error")
        role = page.get_attribute("#error", "role")
        state = page.evaluate("document.body.dataset.state")
        enabled = page.is_enabled("#submit-button")
        job = page.evaluate("window.rendersPage.job")
    assert shown == body["error"] and role == "alert"
    assert state == "idle" and enabled and job is None


def test_the_cancel_button_stops_a_job(server_url: str) -> None:
    with browser.chromium_page(None) as page:
        open_page(page, server_url)
        page.fill("#text-input", LONG_TEXT)
        page.click("#submit-button")
        page.wait_for_selector("#cancel-button:enabled", timeout=10_000)
        page.click("#cancel-button")
        page.wait_for_function(FINAL_JS, timeout=RENDER_MS)
        state = page.evaluate("document.body.dataset.state")
        job = page.evaluate("window.rendersPage.job")
        video_hidden = page.evaluate("document.getElementById('result-video').hidden")
        buttons = {b: page.is_disabled(f"#{b}-button") for b in ("submit", "cancel")}
    assert state == "cancelled", job
    total = job["progress"]["total"]
    assert total == 0 or job["progress"]["frames"] < total, job  # stopped before the end
    assert video_hidden and buttons == {"submit": False, "cancel": True}
