"""``avatar motion`` end to end on the committed model, including bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.write import encode_audio
from tests.conftest import WEIGHTS, write_wav

pytestmark = pytest.mark.skipif(not (WEIGHTS / "motion.onnx").exists(), reason="no model yet")


def avatar(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avatar.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _speechlike(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # syllable-like bursts
    x = 0.3 * env * np.sin(2 * np.pi * 140 * t) + 0.02 * rng.standard_normal(len(t))
    x = x.astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _check_ok(proc: subprocess.CompletedProcess[str], out: Path, seconds: float) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert data["fps"] == 25
    assert data["channels"][0] == "jawOpen" and len(data["channels"]) == 31
    assert len(data["frames"]) == math.ceil(seconds * 25)
    frames = np.array(data["frames"])
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    return data


@pytest.mark.parametrize(
    ("rate", "channels", "fmt"),
    [(16000, 1, "s16"), (8000, 1, "u8"), (96000, 1, "s16"), (44100, 2, "s32"), (48000, 6, "s16")],
)
def test_any_rate_layout_and_depth(tmp_path: Path, rate: int, channels: int, fmt: str) -> None:
    wav = write_wav(tmp_path / "in.wav", _speechlike(2.0, rate, channels), rate, fmt)
    out = tmp_path / "m.json"
    _check_ok(avatar("motion", str(wav), "-o", str(out), "-q"), out, 2.0)


@pytest.mark.parametrize(
    ("codec", "suffix"),
    [("libmp3lame", "mp3"), ("libopus", "ogg"), ("flac", "flac"), ("aac", "m4a")],
)
def test_compressed_formats(tmp_path: Path, codec: str, suffix: str) -> None:
    path = encode_audio(tmp_path / f"in.{suffix}", codec, _speechlike(2.0, 48000), 48000)
    out = tmp_path / "m.json"
    proc = avatar("motion", str(path), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    n = len(json.loads(out.read_text())["frames"])
    assert abs(n - 50) <= 2  # encoders pad or trim a few ms


def test_plot_is_written(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "in.wav", _speechlike(1.5, 16000), 16000)
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    _check_ok(avatar("motion", str(wav), "-o", str(out), "--plot", str(png), "-q"), out, 1.5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nan_and_inf_samples_are_repaired_with_one_warning(tmp_path: Path) -> None:
    x = _speechlike(2.0, 16000)
    x[100:200] = np.nan
    x[5000:5010] = np.inf
    wav = write_wav(tmp_path / "nan.wav", x, 16000, "flt")
    out = tmp_path / "m.json"
    proc = avatar("motion", str(wav), "-o", str(out), "-q")
    _check_ok(proc, out, 2.0)
    assert "NaN" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"hello, this is text not audio\n" * 20, "not an audio file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), ""),
    ],
)
def test_bad_files_give_one_error_line(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    out = tmp_path / "m.json"
    proc = avatar("motion", str(bad), "-o", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not out.exists() and not (tmp_path / "m.json.part").exists()


def test_missing_file_and_bad_option(tmp_path: Path) -> None:
    proc = avatar("motion", str(tmp_path / "nope.wav"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    wav = write_wav(tmp_path / "in.wav", _speechlike(0.5, 16000), 16000)
    proc = avatar("motion", str(wav), "--set", "motion.fps=-3", "-o", str(tmp_path / "m.json"))
    assert proc.returncode == 2 and "motion.fps" in proc.stderr and "Traceback" not in proc.stderr


def test_fps_30(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "in.wav", _speechlike(2.0, 16000), 16000)
    out = tmp_path / "m.json"
    proc = avatar("motion", str(wav), "-o", str(out), "--fps", "30", "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["fps"] == 30 and len(data["frames"]) == 60


@pytest.mark.slow
def test_one_hour_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    rate = 8000
    path = tmp_path / "hour.wav"
    block = _speechlike(60.0, rate)
    import av

    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        pcm = (block * 32767).astype(np.int16)[None]
        for _ in range(60):
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = rate
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "m.json"
    # A small launcher process forks the CLI and reports that child's own peak: a child forked
    # straight from pytest would count pytest's pages (torch, mediapipe: ~500 MB) in ru_maxrss.
    launcher = (
        "import os, subprocess, sys; c = subprocess.Popen(sys.argv[1:]); "
        "_, st, u = os.wait4(c.pid, 0); print(os.waitstatus_to_exitcode(st), u.ru_maxrss)"
    )
    cmd = [sys.executable, "-m", "avatar.cli", "motion", str(path), "-o", str(out), "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", launcher, *cmd], capture_output=True, text=True, timeout=1200
    )
    code, peak_kb = proc.stdout.split()[-2:]
    assert code == "0", proc.stderr
    peak_mb = int(peak_kb) / 1024
    # the decoded hour alone would be 230 MB of float32 at 16 kHz; measured ~110 MB
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"
    with out.open() as f:
        n = sum(1 for line in f if line.startswith("["))
    assert n == 3600 * 25
