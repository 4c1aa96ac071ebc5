"""Decoding files of every common kind to mono float32 at 16 kHz, and failing clearly."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from avatar.audio.io import AudioReader, iter_audio, load_audio, probe_audio
from avatar.errors import AudioInputError

RATE = 16000


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int = RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# (name, soundfile format, subtype, source rate, channels, lossy)
FORMATS = [
    ("s16.wav", "WAV", "PCM_16", 16000, 1, False),
    ("u8.wav", "WAV", "PCM_U8", 8000, 1, False),
    ("s24.wav", "WAV", "PCM_24", 96000, 2, False),
    ("s32.wav", "WAV", "PCM_32", 192000, 1, False),
    ("f32.wav", "WAV", "FLOAT", 44100, 6, False),
    ("s24_8ch.wav", "WAV", "PCM_24", 48000, 8, False),
    ("a.flac", "FLAC", "PCM_16", 48000, 2, False),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 44100, 2, True),
    ("vorbis.ogg", "OGG", "VORBIS", 22050, 1, True),
    ("opus.ogg", "OGG", "OPUS", 48000, 2, True),
]


@pytest.mark.parametrize(("name", "fmt", "subtype", "rate", "channels", "lossy"), FORMATS)
def test_decodes_every_common_format_to_mono_16k(
    tmp_path: Path, name: str, fmt: str, subtype: str, rate: int, channels: int, lossy: bool
) -> None:
    x = tone(rate, 1.5)
    path = tmp_path / name
    # The same signal on every channel: the downmix must keep its level.
    sf.write(path, np.repeat(x[:, None], channels, axis=1), rate, format=fmt, subtype=subtype)

    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert info.duration_s == pytest.approx(1.5, abs=0.15 if lossy else 1e-3)

    y = load_audio(path, RATE)
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.all(np.isfinite(y)) and np.abs(y).max() <= 1.0
    if lossy:  # mp3 keeps encoder delay/padding; FFmpeg drops a last vorbis block (~12 ms)
        assert 1.5 * RATE - 0.02 * RATE <= len(y) <= 1.5 * RATE + 0.15 * RATE
    else:
        assert len(y) == 1.5 * RATE
    mid = y[RATE // 4 : RATE + RATE // 4]
    assert peak_hz(mid) == pytest.approx(440.0, abs=2.0)
    assert rms(mid) == pytest.approx(0.5 / np.sqrt(2), rel=0.1 if lossy else 0.02)


def test_pcm_at_the_model_rate_is_bit_exact(tmp_path: Path) -> None:
    x = tone(RATE, 0.5, 300.0, 0.8)
    sf.write(tmp_path / "a.wav", x, RATE, subtype="PCM_16")
    ref, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), ref)


def test_stereo_downmix_is_the_mean_of_the_channels(tmp_path: Path) -> None:
    x = tone(RATE, 1.0, 300.0, 0.9)
    sf.write(tmp_path / "anti.wav", np.stack([x, -x], 1), RATE, subtype="FLOAT")
    sf.write(tmp_path / "left.wav", np.stack([x, 0 * x], 1), RATE, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "anti.wav")).max() < 1e-6
    np.testing.assert_allclose(load_audio(tmp_path / "left.wav"), x / 2, atol=1e-6)


def test_nan_and_inf_become_silence_and_are_counted(tmp_path: Path) -> None:
    rate = 48000
    clean = tone(rate, 1.0)
    dirty = clean.copy()
    dirty[[1000, 1001, 20000]] = np.nan
    dirty[30000] = np.inf
    dirty[40000] = -np.inf
    sf.write(tmp_path / "clean.wav", clean, rate, subtype="FLOAT")
    sf.write(tmp_path / "dirty.wav", dirty, rate, subtype="FLOAT")

    with AudioReader(tmp_path / "dirty.wav", RATE) as reader:
        y = reader.read_all()
    assert reader.report.nonfinite == 5
    warning = reader.report.warning()
    assert warning is not None and "5 NaN/inf" in warning
    assert np.all(np.isfinite(y))
    # The damage stays local (FFmpeg's filter alone would smear NaN over ~30 output samples).
    ref = load_audio(tmp_path / "clean.wav")
    bad_out = np.array([1000, 1001, 20000, 30000, 40000]) // 3
    near = np.zeros(len(y), bool)
    for i in bad_out:
        near[max(0, i - 40) : i + 40] = True
    np.testing.assert_allclose(y[~near], ref[~near], atol=1e-6)
    assert np.abs(y[near] - ref[near]).max() < 0.6


def test_out_of_range_float_samples_are_clipped(tmp_path: Path) -> None:
    x = tone(RATE, 0.5, 200.0, 4.0)
    sf.write(tmp_path / "hot.wav", x, RATE, subtype="FLOAT")
    y = load_audio(tmp_path / "hot.wav")
    assert y.max() == 1.0 and y.min() == -1.0


def test_iter_audio_streams_fixed_blocks_in_bounded_memory(tmp_path: Path) -> None:
    rate, seconds = 48000, 60.0
    x = tone(rate, seconds, 1000.0, 0.3)
    sf.write(tmp_path / "long.wav", np.stack([x, x], 1), rate, subtype="PCM_16")
    whole_bytes = int(seconds * RATE * 4)

    tracemalloc.start()
    total, sizes, checksum = 0, [], 0.0
    with iter_audio(tmp_path / "long.wav", RATE, block_s=0.5) as reader:
        for block in reader:
            sizes.append(len(block))
            total += len(block)
            checksum += float(np.sum(block, dtype=np.float64))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert total == seconds * RATE
    assert set(sizes[:-1]) == {RATE // 2} and 0 < sizes[-1] <= RATE // 2
    assert peak < whole_bytes / 8, f"peak {peak} bytes for a {whole_bytes}-byte decode"
    assert checksum == pytest.approx(float(np.sum(load_audio(tmp_path / "long.wav"))), abs=1e-2)


def test_truncated_files_decode_what_is_readable(tmp_path: Path) -> None:
    x = tone(RATE, 3.0, 300.0, 0.3)
    for name, fmt in [("a.wav", "WAV"), ("a.flac", "FLAC"), ("a.mp3", "MP3")]:
        sf.write(tmp_path / name, x, RATE, format=fmt)
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with AudioReader(tmp_path / f"cut_{name}") as reader:
            y = reader.read_all()
        assert 0.3 * RATE < len(y) < 2.0 * RATE, name
        if fmt != "WAV":  # a cut wav declares the shorter length; the others say 3 s
            assert reader.report.truncated, name
            assert "could be decoded" in (reader.report.warning() or ""), name


def png_bytes() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)  # 4x4 RGB
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * 12 for _ in range(4)))
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def video_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def make_bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"text": "notes.txt", "text_wav": "notes.wav", "png": "face.png"}.get(
        kind, f"{kind}.bin"
    )
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("text", "text_wav"):
        path.write_text("this is not sound\n" * 50)
    elif kind == "png":
        path.write_bytes(png_bytes())
    elif kind == "video":
        path = tmp_path / "video.mp4"
        video_only(path)
    elif kind == "no_samples":
        path = tmp_path / "header_only.wav"
        sf.write(path, np.zeros(0, np.float32), RATE)
    elif kind == "garbage_flac":  # a valid header, then nothing decodable
        sf.write(tmp_path / "ok.flac", tone(RATE, 2.0), RATE)
        data = (tmp_path / "ok.flac").read_bytes()
        noise = np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
        path = tmp_path / "garbage.flac"
        path.write_bytes(data[:100] + noise[100:])
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "not found"),
        ("directory", "is a directory"),
        ("empty", "empty (0 bytes)"),
        ("text", "not an audio file"),
        ("text_wav", "not an audio file"),
        ("png", "not an audio file"),
        ("video", "no audio stream"),
        ("no_samples", "no audio samples"),
        ("garbage_flac", "corrupt or truncated"),
    ],
)
def test_bad_inputs_raise_one_clear_line(tmp_path: Path, kind: str, expected: str) -> None:
    path = make_bad_file(tmp_path, kind)
    with pytest.raises(AudioInputError) as info:
        load_audio(path)
    message = str(info.value)
    assert expected in message
    assert path.name in message and "\n" not in message
    # No FFmpeg traceback rides along with the message.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None
    if kind not in ("no_samples", "garbage_flac"):  # these open fine and fail on decode
        with pytest.raises(AudioInputError):
            probe_audio(path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "locked.wav"
    sf.write(path, tone(RATE, 0.1), RATE)
    path.chmod(0)
    with pytest.raises(AudioInputError, match="permission denied"):
        load_audio(path)
