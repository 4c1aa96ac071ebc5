"""The audio front: WebRTC frames (48 kHz stereo s16) or any rate -> the output timeline and the
16 kHz analysis branch; the file resampler; the numpy reference."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from avatar.audio.pcm import to_mono
from avatar.audio.resample import Decimator, MonoResampler, mono_stream, resample_poly_mono
from avatar.engine.front import AudioFront

RATE = 16000


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


def peak_hz(x: np.ndarray, rate: int = RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def best_lag(y: np.ndarray, ref: np.ndarray, lags: range) -> int:
    mid = slice(200, -200)
    return max(lags, key=lambda k: float(np.dot(y[mid], np.roll(ref, k)[mid])))


def test_webrtc_frames_keep_frequency_level_and_length_on_both_branches() -> None:
    n_in = 48000 * 2
    front = AudioFront()
    blocks = [front.push(to_mono(f), f.sample_rate, 0) for f in aiortc_frames(sine(48000, n_in))]
    out = np.concatenate([b.samples for b in blocks])
    y = np.concatenate([b.analysis for b in blocks])
    assert y.dtype == np.float32 and out.dtype == np.float32
    assert len(out) == n_in and len(y) == n_in // 3  # nothing held back on either branch
    assert all(len(b.analysis) == len(b.samples) // 3 for b in blocks)  # 960 -> 320 each time
    # the output timeline is the input (48 kHz): s16 rounding, and x32767 in, /32768 out
    np.testing.assert_allclose(out, sine(48000, n_in), atol=1e-4)
    assert peak_hz(y[1000:-1000]) == pytest.approx(1000.0, abs=1.0)
    # Dual-mono stereo keeps its level (FFmpeg's default float downmix would give 0.707).
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_the_analysis_branch_is_the_signal_after_a_fixed_group_delay() -> None:
    rng = np.random.default_rng(0)
    freqs, phases = rng.uniform(50, 6000, 40), rng.uniform(0, 2 * np.pi, 40)

    def signal(t: np.ndarray) -> np.ndarray:  # band-limited: both branches pass it unchanged
        return 0.02 * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None]).sum(0)

    x = signal(np.arange(48000) / 48000).astype(np.float32)
    dec = Decimator(3, RATE)
    y = np.concatenate([dec.push(x[i : i + 960]) for i in range(0, len(x), 960)])
    assert len(y) == 16000
    # 96 taps ending at input 3k + 2 are centred 47.5 samples earlier: output k shows the signal
    # at input time 3k - 45.5 (0.95 ms late), whatever the block sizes
    ref = signal((3 * np.arange(len(y)) - 45.5) / 48000)
    err = y[100:] - ref[100:]
    # float32 filtering: vectorised and machine-dependent, measured 2e-5 of the signal
    assert np.sqrt(np.mean(err**2)) < 1e-3 * np.sqrt(np.mean(ref[100:] ** 2))


@pytest.mark.parametrize(("rate", "sizes"), [(44100, [441, 1000, 17]), (8000, [160]), (22050, [1])])
def test_other_rates_and_block_sizes_reach_the_output_timeline(rate: int, sizes: list[int]) -> None:
    n_in = rate * 2
    x = sine(rate, n_in, 700.0, 0.4).astype(np.float32)
    front, pieces, i, k = AudioFront(), [], 0, 0
    while i < n_in:
        size = sizes[k % len(sizes)]
        pieces.append(front.push(x[i : i + size], rate, 0))
        i, k = i + size, k + 1
    out = np.concatenate([b.samples for b in pieces])
    assert 0 <= n_in * 48000 / rate - len(out) <= 48 * 3  # libswresample holds ~1 ms back
    assert peak_hz(out[2000:-2000], 48000) == pytest.approx(700.0, abs=1.0)
    assert np.abs(out[2000:-2000]).max() == pytest.approx(0.4, abs=0.01)


def test_a_rate_change_mid_stream_continues_one_timeline() -> None:
    front = AudioFront()
    a = front.push(sine(48000, 9600).astype(np.float32), 48000, 0)
    b = front.push(sine(44100, 4410).astype(np.float32), 44100, 0)
    assert len(a.samples) == 9600 and 4700 <= len(b.samples) <= 4800
    assert front.samples_out == len(a.samples) + len(b.samples)
    assert len(a.analysis) + len(b.analysis) == front.samples_out // 3


def test_nonfinite_input_is_zeroed() -> None:
    x = sine(48000, 4800).astype(np.float32)
    x[[10, 2000]] = np.nan
    x[3000] = np.inf
    for rate in (48000, 44100):
        block = AudioFront().push(x, rate, 0)
        assert np.all(np.isfinite(block.samples)) and np.all(np.isfinite(block.analysis))


def test_mono_stream_picks_the_zero_hold_decimator_for_integer_ratios() -> None:
    assert isinstance(mono_stream(16000, 48000), Decimator)
    assert not isinstance(mono_stream(48000, 44100), Decimator)


def test_file_resampler_is_zero_phase_against_the_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(48000), np.ones(4) / 4, "same") * 0.2  # broadband
    mono = MonoResampler(RATE)
    y = np.concatenate([mono.push(f) for f in aiortc_frames(x)] + [mono.flush()])
    ref = resample_poly_mono(np.round(np.clip(x, -1, 1) * 32767) / 32767, 48000, RATE)
    assert len(ref) == len(y)
    assert best_lag(y, ref, range(-5, 6)) == 0
    err = y[200:-200] - ref[200:-200]
    assert np.sqrt(np.mean(err**2)) < 0.05 * np.sqrt(np.mean(ref[200:-200] ** 2))


def test_to_mono_reads_packed_and_planar_frames() -> None:
    x = sine(48000, 960, 440.0, 0.25)
    stereo = aiortc_frames(x)[0]
    np.testing.assert_allclose(to_mono(stereo), x, atol=1e-4)  # s16 rounding, 32767 vs 32768
    planar = av.AudioFrame.from_ndarray(np.stack([x, x]).astype(np.float32), "fltp", "stereo")
    np.testing.assert_allclose(to_mono(planar), x, atol=1e-6)


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
