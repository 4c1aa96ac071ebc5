"""Render jobs in one process (the embedded default): the API, bad input, results, 50 fps."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from avatar.audio.io import load_audio
from avatar.compose.offline import render_file
from avatar.compose.renders import KeptModels
from avatar.compose.serve import make_server
from avatar.config import load_config
from avatar.data.tts import installed_voices
from avatar.renders.jobs import FolderBook, RenderJob
from avatar.renders.request import RenderRequest
from avatar.renders.runner import JobRunner, RenderMetrics
from avatar.renders.stores import FolderStore
from avatar.renders.webhook import HEADER, SECRET_ENV, verify
from tests.conftest import WEIGHTS

SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"
pytestmark = pytest.mark.skipif(not installed_voices(), reason="festival voices not installed")


@asynccontextmanager
async def jobs_server(store: Path, *overrides: str) -> AsyncIterator[str]:
    cfg = load_config(overrides=[f"renders.store={store}", "renders.allow_private_urls=true",
                                 "renders.fetch_timeout_s=1", *overrides])  # fmt: skip
    server = make_server(cfg)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)


async def wait_done(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    for _ in range(1200):
        async with http.get(f"{url}/v1/renders/{job_id}") as r:
            status: dict[str, Any] = await r.json()
        if status["status"] in ("done", "failed", "cancelled"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {status}")


def decode(path: Path) -> tuple[list[np.ndarray], float, float]:
    """Frames (RGB), the video's duration and the audio's, in seconds."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.duration is not None and a.duration is not None
        assert v.time_base is not None and a.time_base is not None
        durations = float(v.duration * v.time_base), float(a.duration * a.time_base)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, *durations


async def never_answers() -> tuple[asyncio.Server, str]:
    """A TCP server that accepts and says nothing (an audio URL that never answers)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/speech.wav"


async def claim_2gb(url: str) -> tuple[int, str]:
    """A multipart upload whose header says 2 GB: refused before its body is read."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/renders HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")  # fmt: skip
    await writer.drain()
    head, _, body = (await asyncio.wait_for(reader.read(4096), 10)).partition(b"\r\n\r\n")
    writer.close()
    return int(head.split()[1]), json.loads(body)["error"]


def test_bad_input_is_refused_before_anything_is_queued(tmp_path: Path) -> None:
    async def run() -> list[tuple[str, int, str]]:
        silent, slow_url = await never_answers()
        seen = []
        limits = ("renders.max_audio_mb=1",)
        async with jobs_server(tmp_path, *limits) as url, aiohttp.ClientSession() as http:

            async def post(name: str, **kw: Any) -> None:
                async with http.post(f"{url}/v1/renders", **kw) as r:
                    seen.append((name, r.status, (await r.json())["error"]))

            form = aiohttp.FormData()
            form.add_field("audio", b"this is not audio at all " * 100, filename="x.wav")
            big = aiohttp.FormData()
            big.add_field("audio", b"\0" * (2 << 20), filename="x.wav")
            await post("empty text", json={"text": "   "})
            await post("1 MB of text", json={"text": "word " * 200_000})
            await post("control characters", json={"text": "hello \x07 there"})
            await post("unknown voice", json={"text": "hello", "voice": "darth"})
            await post("non-audio upload", data=form)
            await post("upload too large", data=big)
            await post("a URL that never answers", json={"audio_url": slow_url})
            await post("unknown avatar", json={"text": "hello", "avatar": "nobody"})
            await post("fps 1000", json={"text": "hello", "fps": 1000})
            await post("text and audio_url", json={"text": "hi", "audio_url": slow_url})
            await post("no input", json={"fps": 25})
            await post("a field we do not know", json={"text": "hi", "colour": "red"})
            await post("not JSON", data=b"text=hello", headers={"Content-Type": "text/plain"})
            hook = {"text": "hi", "webhook_url": "http://127.0.0.1/x"}
            await post("webhook without a secret", json=hook)
            seen.append(("a 2 GB upload", *await claim_2gb(url)))
            async with http.get(f"{url}/metrics") as r:
                assert "avatar_render_queue_jobs 0.0" in await r.text()
        silent.close()
        return seen

    seen = asyncio.run(run(), debug=False)
    for name, status, error in seen:
        assert 400 <= status < 500, (name, status, error)
        assert error and "internal" not in error, (name, error)
    statuses = {name: status for name, status, _ in seen}
    assert statuses["1 MB of text"] == 413 and statuses["upload too large"] == 413
    assert statuses["a 2 GB upload"] == 413
    assert statuses["non-audio upload"] == 415 and statuses["unknown avatar"] == 404
    assert "within 1 s" in dict((n, e) for n, _, e in seen)["a URL that never answers"]
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "inputs").exists()


def test_text_and_audio_jobs_render_and_end_once(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(SECRET_ENV, "hook-secret")
    calls: list[tuple[bytes, str]] = []

    async def run() -> dict[str, Any]:
        async def hook(request: web.Request) -> web.Response:
            calls.append((await request.read(), request.headers.get(HEADER, "")))
            return web.Response(text="ok")

        hooks = web.Application()
        hooks.router.add_post("/hook", hook)
        hook_runner = web.AppRunner(hooks)
        await hook_runner.setup()
        await web.TCPSite(hook_runner, "127.0.0.1", 0).start()
        hook_url = f"http://127.0.0.1:{hook_runner.addresses[0][1]}/hook"
        out: dict[str, Any] = {}
        async with jobs_server(tmp_path) as url, aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("audio", SAMPLE.read_bytes(), filename="sample.ogg")
            form.add_field("fps", "50")
            async with http.post(f"{url}/v1/renders", data=form) as r:
                assert r.status == 202, await r.text()
                audio_job = (await r.json())["id"]
            text = {"text": "Hello there. This was typed.", "webhook_url": hook_url}
            headers = {"Idempotency-Key": "order-42"}
            async with http.post(f"{url}/v1/renders", json=text, headers=headers) as r:
                assert r.status == 202
                text_job = (await r.json())["id"]
            async with http.post(f"{url}/v1/renders", json=text, headers=headers) as r:
                assert r.status == 200 and (await r.json())["id"] == text_job  # the same job
            async with http.post(f"{url}/v1/renders", json={"text": "Never mind."}) as r:
                doomed = (await r.json())["id"]
            async with http.delete(f"{url}/v1/renders/{doomed}") as r:
                assert r.status == 200 and (await r.json())["status"] == "cancelled"
            for name, job in (("audio", audio_job), ("text", text_job), ("doomed", doomed)):
                out[name] = await wait_done(http, url, job)
            async with http.delete(f"{url}/v1/renders/{audio_job}") as r:
                assert r.status == 409
            for name in ("audio", "text"):
                async with http.get(url + out[name]["result_url"]) as r:
                    assert r.status == 200
                    (tmp_path / f"{name}.mp4").write_bytes(await r.read())
            await asyncio.sleep(0.5)  # the webhook is sent after the record is written
        await hook_runner.cleanup()
        return out

    out = asyncio.run(run())
    assert out["doomed"]["status"] == "cancelled"
    for name in ("audio", "text"):
        assert out[name]["status"] == "done", out[name]
        assert out[name]["tries"] == 1
        assert out[name]["progress"]["frames"] == out[name]["progress"]["total"] > 0
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == sorted(
        f"{out[n]['id']}.mp4" for n in ("audio", "text"))  # fmt: skip

    # 50 fps: every frame rendered from the motion track, count and length exact
    frames, video_s, audio_s = decode(tmp_path / "audio.mp4")
    speech_s = len(load_audio(SAMPLE, 48000)) / 48000
    assert len(frames) == math.ceil(round(speech_s * 50, 6))
    assert abs(video_s - len(frames) / 50) < 1e-6 and abs(audio_s - speech_s) < 0.03
    mouth = np.array([f[261:375, 160:353].astype(np.float32).mean(axis=2) for f in frames])
    steps = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2))
    moving = steps > 0.3  # frames where the mouth moves at all
    assert moving.mean() > 0.5
    held = np.flatnonzero(~moving[1:-1] & moving[:-2] & moving[2:])
    # a 25 fps track shown twice would hold every other frame: about half of the moving ones
    assert len(held) < 0.05 * moving.sum(), f"frames repeated inside motion: {held}"

    # the job's video is what `avatar render` makes of the same audio at 50 fps
    cfg = load_config(overrides=["motion.fps=50"])
    render_file(SAMPLE, tmp_path / "cli.mp4", cfg, progress=False)
    cli_frames, _, _ = decode(tmp_path / "cli.mp4")
    assert len(cli_frames) == len(frames)
    diff = max(float(np.abs(a.astype(int) - b.astype(int)).mean())
               for a, b in zip(frames, cli_frames, strict=True))  # fmt: skip
    assert diff < 0.5, diff

    # the webhook: one signed call for the text job, done, with its result's URL
    assert len(calls) == 1
    body, signature = calls[0]
    assert verify(b"hook-secret", body, signature, now=time.time())
    assert not verify(b"other", body, signature, now=time.time())
    sent = json.loads(body)
    assert sent["id"] == out["text"]["id"] and sent["status"] == "done" and sent["result_url"]


def runner_for(tmp_path: Path, *overrides: str) -> tuple[JobRunner, FolderBook, FolderStore]:
    cfg = load_config(overrides=[f"renders.store={tmp_path}", *overrides])
    book, store = FolderBook(tmp_path), FolderStore(tmp_path)
    runner = JobRunner(cfg, book, store, RenderMetrics(CollectorRegistry()), KeptModels())
    return runner, book, store


def audio_job(store: FolderStore, **fields: Any) -> RenderJob:
    job = RenderJob(id=uuid.uuid4().hex, request=RenderRequest(fps=25), input_key="inputs/x",
                    created_s=0.0, **fields)  # fmt: skip
    store.put("inputs/x", SAMPLE)
    return job


def test_time_limit_and_dead_letter_end_a_job_with_its_reason(tmp_path: Path) -> None:
    runner, book, store = runner_for(tmp_path, "renders.job_timeout_s=0.3", "renders.max_tries=2")
    slow, dead = audio_job(store), audio_job(store, tries=2, status="running")

    async def run() -> tuple[RenderJob | None, RenderJob | None]:
        for job in (slow, dead):
            await book.add(job)
            await runner.run(job.id)
        return await book.get(slow.id), await book.get(dead.id)

    timed_out, given_up = asyncio.run(run())
    assert timed_out is not None and timed_out.status == "failed"
    assert timed_out.error == "timed out after 0.3 s (renders.job_timeout_s)"
    assert timed_out.frames < 205 and not store.exists(slow.result_key)  # stopped early
    assert given_up is not None and given_up.status == "failed" and given_up.tries == 2
    assert given_up.error is not None and "gave up after 2 tries" in given_up.error


def test_jobs_left_queued_by_a_stopped_server_run_when_it_starts(tmp_path: Path) -> None:
    async def run() -> dict[str, Any]:
        _, book, store = runner_for(tmp_path)
        job = audio_job(store)
        await book.add(job)  # queued by a server that stopped before running it
        async with jobs_server(tmp_path) as url, aiohttp.ClientSession() as http:
            return await wait_done(http, url, job.id)

    assert asyncio.run(run())["status"] == "done"
