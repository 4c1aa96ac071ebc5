"""``avatar profile``: a speech file through the live engine, or N live sessions, into a report.

- ``profile_file``: the file is pushed in 20 ms blocks at real time (as a microphone would), into
  the same :class:`~avatar.engine.AvatarEngine` the server runs, with a
  :class:`~avatar.profile.profiler.Profiler` observing it; each frame is converted to YUV and
  encoded with aiortc's own VP8 encoder as the server's sender would
  (:class:`~avatar.server.tracks.FrameEncoder`; there is no network, so *send* is absent).
- ``profile_sessions``: ``avatar serve --profile`` in a child process and N aiortc client peers
  on loopback (in this process) that subscribe to every frame's record over the data channel.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from avatar.audio.io import iter_audio
from avatar.clock import Clock, MonotonicClock, sleep_for
from avatar.compose.engines import build_engine
from avatar.config import Config, ServerConfig
from avatar.engine.engine import AvatarEngine
from avatar.frames import AudioChunk
from avatar.profile.log import FrameRecord, from_dict
from avatar.profile.profiler import Profiler
from avatar.profile.report import write_report
from avatar.server.aiortc_hooks import configure_ice, tune_encoders
from avatar.server.tracks import FrameEncoder
from avatar.tasks import cancel, spawn
from avatar.testing.browser import serve_process
from avatar.testing.peer import AvatarPeer
from avatar.units import NS_PER_S, OUTPUT_RATE, PACKET_SAMPLES


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs {model}".strip()


def _meta(cfg: Config, **extra: Any) -> dict[str, Any]:
    return {
        "command": "avatar " + " ".join(sys.argv[1:]), "machine": machine(),
        "avatar": cfg.render.avatar, "size": cfg.render.size, "fps": cfg.motion.fps,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), **extra,
    }  # fmt: skip


# -- one file, offline -------------------------------------------------------------------------


def profile_file(audio: Path, out: Path, cfg: Config) -> dict[str, Any]:
    speech = np.concatenate(list(iter_audio(audio, rate=OUTPUT_RATE, block_s=1.0)))
    records = asyncio.run(_profile_file(speech, cfg))
    return write_report(out, records, cfg.motion.fps, _meta(cfg, input=str(audio)))


async def _profile_file(speech: np.ndarray, cfg: Config) -> list[FrameRecord]:
    clock = MonotonicClock()
    pool = ThreadPoolExecutor(cfg.engine.workers or os.cpu_count() or 2)
    loop = asyncio.get_running_loop()
    profiler = Profiler(clock, cfg.motion.fps, "file")
    engine = await loop.run_in_executor(
        pool, lambda: build_engine(cfg, clock, live=True, executor=pool, observer=profiler)
    )
    tune_encoders(cfg.server.encoder)
    encoder = FrameEncoder(profiler)
    feeder = spawn(feed_realtime(engine, speech, clock), "profile-feed")
    engine.start()
    end = clock.now_ns() + round((len(speech) / OUTPUT_RATE + 0.5) * NS_PER_S)
    try:
        async for frame in engine:
            await loop.run_in_executor(pool, encoder.encode, frame)
            if clock.now_ns() >= end:
                break
    finally:
        await cancel(feeder)
        await engine.aclose()
        pool.shutdown(wait=False)
    return profiler.records


async def feed_realtime(engine: AvatarEngine, speech: np.ndarray, clock: Clock) -> None:
    """Push 48 kHz speech in 20 ms packets, each when a microphone would have delivered it."""
    start = clock.now_ns()
    for k, i in enumerate(range(0, len(speech), PACKET_SAMPLES)):
        await clock.sleep_until(start + (k + 1) * PACKET_SAMPLES * NS_PER_S // OUTPUT_RATE)
        engine.push_audio(AudioChunk(speech[i : i + PACKET_SAMPLES], OUTPUT_RATE))


# -- N live sessions ----------------------------------------------------------------------------


def profile_sessions(n: int, seconds: float, out: Path, cfg: Config) -> dict[str, Any]:
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))
    args = ["--profile", "--set", f"render.size={cfg.render.size}",
            "--set", f"render.avatar={cfg.render.avatar}"]  # fmt: skip
    with serve_process(*args) as url:
        records = asyncio.run(_sessions(url, n, seconds, MonotonicClock()))
    meta = _meta(cfg, sessions_requested=n, seconds=seconds,
                 note="client peers run on the same machine, in the profiling process")  # fmt: skip
    return write_report(out, records, cfg.motion.fps, meta)


def _sample() -> np.ndarray:
    root = Path(__file__).resolve().parents[1]
    return np.concatenate(list(iter_audio(root / "assets/sample.ogg", rate=OUTPUT_RATE)))


def session_speech(seconds: float, offset_s: float = 0.0) -> np.ndarray:
    """The bundled sample with 1 s pauses, looped, starting ``offset_s`` into the loop."""
    loop = np.concatenate([_sample(), np.zeros(OUTPUT_RATE, np.float32)])
    reps = int(np.ceil((seconds + offset_s) * OUTPUT_RATE / len(loop))) + 1
    return np.tile(loop, reps)[round(offset_s * OUTPUT_RATE) :]


def talk_turns(
    seconds: float, session: int = 0, turn_s: tuple[float, float] = (3.0, 8.0)
) -> list[tuple[float, float]]:
    """A call's talk turns for one session: ``(start_s, end_s)`` of each turn in ``seconds``.
    Turns and the silences between them (the avatar listening) last ``turn_s`` seconds each,
    drawn per session, so about half the time is talking; even sessions start talking, odd ones
    listening, and their lengths differ, so sessions do not all talk at once."""
    rng = np.random.default_rng(session)
    turns: list[tuple[float, float]] = []
    t, talking = 0.0, session % 2 == 0
    while t < seconds:
        length = float(rng.uniform(*turn_s))
        if talking:
            turns.append((t, min(t + length, seconds)))
        t, talking = t + length, not talking
    return turns


def duty_speech(seconds: float, session: int = 0, noise: float = 2e-4) -> np.ndarray:
    """``seconds`` of a call's input for one session (:func:`talk_turns`): the bundled sample,
    looped, in the talk turns; between them a microphone's noise floor (``noise`` RMS, about
    -74 dBFS, the sample's own floor in its pauses)."""
    rng = np.random.default_rng(1000 + session)
    n = round(seconds * OUTPUT_RATE)
    out = (noise * rng.standard_normal(n)).astype(np.float32)
    sample, read = _sample(), round(1.3 * session * OUTPUT_RATE)  # not all the same words
    for start, end in talk_turns(seconds, session):
        a, b = round(start * OUTPUT_RATE), round(end * OUTPUT_RATE)
        idx = (read + np.arange(b - a)) % len(sample)  # the speech goes on where it stopped
        out[a:b] = sample[idx]
        read += b - a
    return out


async def _sessions(url: str, n: int, seconds: float, clock: Clock) -> list[FrameRecord]:
    peers = [
        AvatarPeer(url, session_speech(seconds + 5, offset_s=1.7 * i),
                   summarize=lambda _: None, subscribe={"profile_frames": True})
        for i in range(n)
    ]  # fmt: skip
    await asyncio.gather(*(p.connect(timeout_s=60) for p in peers))
    await sleep_for(clock, seconds)
    await asyncio.gather(*(p.close() for p in peers))
    records = [
        from_dict(f)
        for p in peers
        for m in p.received.messages
        if m.get("type") == "profile_frames"
        for f in m["frames"]
    ]
    return sorted(records, key=lambda r: (r.session, r.index))
