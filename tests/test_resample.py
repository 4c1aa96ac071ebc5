"""WebRTC audio (48 kHz stereo s16 frames) -> 16 kHz mono chunks on a sample-count timeline."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import av
import numpy as np
import pytest

from avatar.audio.resample import MonoResampler, WebRtcResampler, resample_poly_mono
from avatar.config import AudioConfig
from avatar.errors import AudioInputError
from avatar.frames import AudioChunk

RATE = 16000
NS_PER_SAMPLE = 1_000_000_000 // RATE  # 62500 ns, exact at 16 kHz


def sine(rate: int, n: int, freq: float = 1000.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def aiortc_frames(x: np.ndarray, rate: int = 48000, size: int = 960) -> list[av.AudioFrame]:
    """What aiortc's Opus decoder hands over: packed s16 stereo frames with pts."""
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    frames = []
    for i in range(0, len(pcm), size):
        part = pcm[i : i + size]
        interleaved = np.repeat(part[:, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate = rate
        frame.pts = i
        frame.time_base = Fraction(1, rate)
        frames.append(frame)
    return frames


def run(conv: WebRtcResampler, inputs: list) -> tuple[list[AudioChunk], list[AudioChunk]]:
    body = [c for item in inputs for c in conv.push(item)]
    return body, conv.flush()


def samples(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


def peak_hz(x: np.ndarray, rate: int = RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_webrtc_sine_keeps_frequency_level_length_and_timeline() -> None:
    n_in = 48000 * 2
    conv = WebRtcResampler.from_config(AudioConfig(), start_pts_ns=5_000_000_000)
    body, tail = run(conv, aiortc_frames(sine(48000, n_in)))
    chunks = body + tail
    y = samples(chunks)

    assert y.dtype == np.float32
    assert len(y) == n_in // 3  # exact once flushed
    # FFmpeg's resampler holds back a short look-ahead until the flush: measured 16 samples.
    held = n_in // 3 - len(samples(body))
    assert 0 < held <= 48, held
    assert peak_hz(y[1000:-1000]) == pytest.approx(1000.0, abs=1.0)
    # Dual-mono stereo keeps its level (FFmpeg's default float downmix would give 0.707).
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)

    expected_pts = 5_000_000_000
    for c in chunks:
        assert c.pts_ns == expected_pts and c.sample_rate == RATE
        expected_pts += len(c.samples) * NS_PER_SAMPLE
    assert conv.next_pts_ns == expected_pts
    assert conv.samples_out == len(y) and conv.samples_in == n_in


def test_resampler_is_zero_phase_against_a_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(48000), np.ones(4) / 4, "same") * 0.2  # broadband
    y = samples([c for pair in run(WebRtcResampler(), aiortc_frames(x)) for c in pair])
    ref = resample_poly_mono(np.round(np.clip(x, -1, 1) * 32767) / 32767, 48000, RATE)
    assert len(ref) == len(y)
    mid = slice(200, -200)
    lags = range(-5, 6)
    best = max(lags, key=lambda k: float(np.dot(y[mid], np.roll(ref, k)[mid])))
    assert best == 0
    err = y[mid] - ref[mid]
    assert np.sqrt(np.mean(err**2)) < 0.05 * np.sqrt(np.mean(ref[mid] ** 2))


def test_raw_arrays_in_every_layout_match_av_frames() -> None:
    x = sine(48000, 48000, 440.0, 0.3)
    frames = aiortc_frames(x)
    ref = samples([c for pair in run(WebRtcResampler(), frames) for c in pair])
    pcm = [f.to_ndarray() for f in frames]  # (1, 1920) packed s16 stereo, as aiortc gives
    for shape in [lambda a: a, lambda a: a.reshape(-1), lambda a: a.reshape(-1, 2)]:
        out = samples([c for pair in run(WebRtcResampler(), [shape(a) for a in pcm]) for c in pair])
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    ("rate", "channels", "sizes"), [(44100, 1, [441, 1000, 17]), (8000, 2, [160])]
)
def test_other_rates_layouts_and_frame_sizes(rate: int, channels: int, sizes: list[int]) -> None:
    n_in = rate * 2
    x = sine(rate, n_in, 700.0, 0.4).astype(np.float32)
    interleaved = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    conv = WebRtcResampler(RATE, rate, channels)
    pieces, i, k = [], 0, 0
    while i < n_in:
        size = sizes[k % len(sizes)]
        pieces.append(interleaved[i * channels : (i + size) * channels])
        i, k = i + size, k + 1
    y = samples([c for pair in run(conv, pieces) for c in pair])
    assert abs(len(y) - n_in * RATE / rate) <= 1
    assert peak_hz(y[500:-500]) == pytest.approx(700.0, abs=1.0)
    assert np.abs(y[500:-500]).max() == pytest.approx(0.4, abs=0.01)


def test_format_change_mid_stream_continues_the_timeline() -> None:
    conv = WebRtcResampler()
    first = [c for f in aiortc_frames(sine(48000, 9600)) for c in conv.push(f)]
    mono = av.AudioFrame.from_ndarray(sine(44100, 4410)[None].astype(np.float32), "flt", "mono")
    mono.sample_rate = 44100
    second = conv.push(mono) + conv.flush()
    chunks = first + second
    assert len(samples(chunks)) == 3200 + 1600
    for a, b in pairwise(chunks):
        assert b.pts_ns == a.end_ns


def test_nonfinite_float_input_is_zeroed_and_counted() -> None:
    x = sine(48000, 4800).astype(np.float32)
    x[[10, 2000]] = np.nan
    x[3000] = np.inf
    conv = WebRtcResampler(RATE, 48000, 1)
    y = samples([c for pair in run(conv, [x]) for c in pair])
    assert conv.nonfinite == 3
    assert np.all(np.isfinite(y)) and len(y) == 1600


def test_bad_raw_input_is_an_audio_input_error() -> None:
    conv = WebRtcResampler()
    with pytest.raises(AudioInputError, match="int16 or float32"):
        conv.push(np.zeros(1920, np.int32))
    with pytest.raises(AudioInputError, match="whole number"):
        conv.push(np.zeros(1919, np.int16))


def test_mono_resampler_flush_releases_exactly_the_rest() -> None:
    mono = MonoResampler(RATE)
    frame = av.AudioFrame.from_ndarray(sine(48000, 4800)[None].astype(np.float32), "flt", "mono")
    frame.sample_rate = 48000
    assert len(mono.push(frame)) + len(mono.flush()) == 1600
    assert len(mono.flush()) == 0


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (22050, 16000), (8000, 16000)])
def test_resample_poly_mono_keeps_a_tone(src: int, dst: int) -> None:
    x = sine(src, src, 440.0, 0.5)
    y = resample_poly_mono(x, src, dst)
    assert len(y) == -(-len(x) * dst // src)
    ref = sine(dst, len(y), 440.0, 0.5)
    np.testing.assert_allclose(y[200:-200], ref[200:-200], atol=2e-3)
