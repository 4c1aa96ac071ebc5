"""Benchmark render jobs: throughput with 1 and 2 ``avatar worker`` processes, and what one job
costs stage by stage. Everything runs on the shipped path: a real ``avatar serve`` queuing in a
real ``redis-server``, real workers, results in a real S3-compatible server (SeaweedFS).

- Throughput: ``--jobs`` audio uploads of ``--seconds`` each (cut from the bundled sample) are
  submitted at once; the wall time from the first submission to the last job done, divided by
  the seconds of speech, is "render seconds per audio second" (lower is faster). 1 worker, then
  2 workers, on fresh services; the ratio is the speed-up.
- Stages of one job, in one process: text to speech (festival), loading the renderer and the
  motion model (a worker does it once and keeps them), the render (engine + encode, 25 fps 512
  mp4; also 50 fps and WebM), the store's put of the result (S3).

Usage: python scripts/bench_renders.py [--jobs 8] [--seconds 4] [--json docs/bench_renders.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from avatar.compose.offline import render_file
from avatar.compose.renderers import load_renderer
from avatar.config import load_config
from avatar.data.tts import speak, write_wave
from avatar.motion.runtime import load_motion_backend
from avatar.render.video import Container
from avatar.renders.stores import S3Store
from avatar.testing.browser import server_process
from avatar.testing.services import S3_KEYS, redis_server, s3_server, speech_clips, worker_process

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "avatar" / "assets" / "sample.ogg"
TEXT = ("Good morning, and welcome to the course. Today we look at how a sound wave becomes "
        "the words you hear, one small step at a time.")  # fmt: skip


def throughput(folder: Path, workers: int, audio: list[Path], seconds: float) -> dict[str, Any]:
    """Wall time of all jobs through ``workers`` workers, on fresh services."""
    with redis_server(folder / "redis") as redis, s3_server(folder / "s3") as endpoint, \
            server_process("--redis", redis.url, "--store", "s3://renders",
                           "--set", f"renders.s3_endpoint={endpoint}") as server:  # fmt: skip
        stack = contextlib.ExitStack()
        for i in range(workers):
            log = folder / f"worker{i}.log"
            stack.enter_context(worker_process(redis.url, "s3://renders", endpoint, log))
        time.sleep(3.0)  # the workers load their models before the clock starts
        t0 = time.monotonic()
        jobs = []
        for path in audio:
            files = {"audio": (path.name, path.read_bytes())}
            r = requests.post(f"{server.url}/v1/renders", files=files, timeout=30)
            r.raise_for_status()
            jobs.append(r.json()["id"])
        states = wait_all(server.url, jobs)
        wall = time.monotonic() - t0
        stack.close()
    bad = [s for s in states if s["status"] != "done"]
    assert not bad, bad
    speech = seconds * len(audio)
    waits = sorted(s["started_s"] - s["created_s"] for s in states)
    return {"workers": workers, "jobs": len(jobs), "speech_s": speech, "wall_s": round(wall, 2),
            "render_s_per_audio_s": round(wall / speech, 3),
            "first_job_queue_wait_s": round(waits[0], 3)}  # fmt: skip


def wait_all(url: str, jobs: list[str]) -> list[dict[str, Any]]:
    while True:
        states = [requests.get(f"{url}/v1/renders/{j}", timeout=10).json() for j in jobs]
        if all(s["status"] in ("done", "failed", "cancelled") for s in states):
            return states
        time.sleep(0.2)


def stages(folder: Path) -> dict[str, Any]:
    """One job's stages, timed in this process."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    speech = speak(TEXT)
    out["tts_s"] = round(time.perf_counter() - t, 3)
    out["speech_s"] = round(speech.duration_s, 2)
    wav = folder / "speech.wav"
    write_wave(wav, speech.audio, speech.rate)
    cfg = load_config()
    t = time.perf_counter()
    load_renderer(cfg.render), load_motion_backend(cfg.motion.for_input(False))
    out["models_load_s"] = round(time.perf_counter() - t, 3)  # once per worker, not per job
    runs: list[tuple[str, int, Container]] = [
        ("render_25fps_mp4_s", 25, "mp4"), ("render_50fps_mp4_s", 50, "mp4"),
        ("render_25fps_webm_s", 25, "webm")]  # fmt: skip
    for name, fps, fmt in runs:
        cfg = load_config(overrides=[f"motion.fps={fps}"])
        t = time.perf_counter()
        render_file(wav, folder / f"out.{fmt}", cfg, progress=False, container=fmt)
        out[name] = round(time.perf_counter() - t, 3)
    with s3_server(folder / "s3-stage") as endpoint:
        store = S3Store("renders", "", endpoint, 3600)
        t = time.perf_counter()
        store.put("renders/x.mp4", folder / "out.mp4")
        out["s3_put_s"] = round(time.perf_counter() - t, 3)
    out["mp4_kb"] = (folder / "out.mp4").stat().st_size // 1024
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.update(S3_KEYS)
    with tempfile.TemporaryDirectory(prefix="bench-renders-") as tmp:
        folder = Path(tmp)
        audio = speech_clips(folder, args.jobs, args.seconds)
        runs = [throughput(folder / f"w{n}", n, audio, args.seconds) for n in (1, 2)]
        stage = stages(folder)
    speedup = runs[0]["wall_s"] / runs[1]["wall_s"]
    command = f"python scripts/bench_renders.py --jobs {args.jobs} --seconds {args.seconds:g}"
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "command": command,
        "throughput": runs,
        "speedup_2_workers": round(speedup, 2),
        "stages": stage,
    }
    for r in runs:
        print(
            f"{r['workers']} worker(s): {r['jobs']} jobs, {r['speech_s']:g} s of speech in "
            f"{r['wall_s']:.1f} s = {r['render_s_per_audio_s']:.3f} render s per audio s"
        )
    print(f"2 workers / 1 worker: {speedup:.2f}x")
    print("one job's stages:", json.dumps(stage))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
