"""`avatar render` and `avatar prepare` end to end: real files, real encoders, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.conftest import write_wav
from tests.test_cli_motion import _speechlike, avatar

SAMPLE = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "sample.ogg"


def test_render_muxes_audio_and_video_in_sync(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "s.wav", _speechlike(3.0, 22050), 22050)
    out = tmp_path / "o.mp4"
    frames = tmp_path / "frames"
    proc = avatar(
        "render", str(wav), "-o", str(out), "--size", "128", "--frames", str(frames), "-q"
    )
    assert proc.returncode == 0, proc.stderr
    assert "75 frames" in proc.stdout
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert len(c.streams.audio) == 1
        assert (v.width, v.height) == (128, 128) and v.codec_context.name in ("h264", "libx264")
        n_video = sum(1 for _ in c.decode(v))
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / 48000
    assert n_video == 75
    assert abs(audio_s - 3.0) < 0.05  # AAC pads a frame at most
    assert len(list(frames.glob("*.png"))) == 75


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--avatar", "nobody"], "avatar 'nobody' not found"),
        (["--renderer", "gan"], "has no GAN renderer"),
    ],
)
def test_render_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = avatar("render", str(SAMPLE), "-o", str(tmp_path / "o.mp4"), "-q", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr


def test_render_rejects_non_audio(tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_text("not audio")
    proc = avatar("render", str(bad), "-o", str(tmp_path / "o.mp4"), "-q")
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def test_prepare_errors_are_one_line_without_mediapipe_noise(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    img = tmp_path / "gray.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(img)
    proc = avatar("prepare", str(img), "-o", str(tmp_path / "a"))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"error: {img}: no face found; use a frontal photo with the whole face visible"
    )


def test_train_renderer_rejects_a_non_video(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    proc = avatar("train", "renderer", str(bad), "-o", str(tmp_path / "a"), "-q")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "cannot read video" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_face_mesh_leaves_nothing_on_stderr_after_it_is_built() -> None:
    """MediaPipe opens its models on its own threads after the constructor returns: what they
    log must not land between our calls (the race once put three lines above a one-line error)."""
    code = (
        "import time\n"
        "from avatar.face.mesh import FaceMesh\n"
        "mesh = FaceMesh()\n"
        "time.sleep(1.0)\n"
        "mesh.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
