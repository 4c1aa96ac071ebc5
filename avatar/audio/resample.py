"""Streaming conversion of audio to mono float32 at another rate.

:class:`MonoResampler` is the one conversion used for files and for WebRTC: FFmpeg's resampler
(through ``av.AudioResampler``) with a level-preserving downmix. FFmpeg's default float downmix
adds the channels at -3 dB each, so a dual-mono stereo signal comes out 3 dB louder than the
same signal in a mono file (and clips at full scale); ``rematrix_maxval=1`` normalises the matrix
so that a signal present on every channel keeps its level (stereo becomes ``(L + R) / 2``; 5.1
keeps FFmpeg's centre-weighted matrix and drops the LFE).

Timing: FFmpeg's resampler is zero-phase (output sample ``k`` is input time ``k / rate``) and
holds back a short look-ahead, which only :meth:`MonoResampler.flush` releases: measured 16
output samples (1 ms) at 16 kHz from 22.05/44.1/48/96 kHz, 32 (2 ms) from 8 kHz. After the
flush a stream's output has ``n_in * rate / src_rate`` samples (to within one).

:func:`mono_stream` is the streaming resampler of the engine's audio front: a zero-hold
:class:`Decimator` for integer ratios (48 -> 16 kHz), libswresample (:class:`SwrStream`) otherwise.
"""

from __future__ import annotations

from math import gcd

import av
import numpy as np

from avatar.units import ANALYSIS_RATE

FLOAT_FORMATS = frozenset({"flt", "fltp", "dbl", "dblp"})
# Normalise the downmix matrix: a signal present on every channel keeps its level.
_SWR_OPTIONS = {"rematrix_maxval": "1.0"}


def _zero_nonfinite(frame: av.AudioFrame) -> tuple[av.AudioFrame, int]:
    """Replace NaN/inf in a float frame by 0; FFmpeg's filter would smear them over ~30 samples."""
    if frame.format.name not in FLOAT_FORMATS:
        return frame, 0
    arr = frame.to_ndarray()
    bad = ~np.isfinite(arr)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return frame, 0
    arr = arr.copy()
    arr[bad] = 0
    fixed = av.AudioFrame.from_ndarray(arr, format=frame.format.name, layout=frame.layout.name)
    fixed.sample_rate = frame.sample_rate
    return fixed, n_bad


class MonoResampler:
    """Any stream of ``av.AudioFrame`` -> mono float32 in [-1, 1] at ``rate``.

    Frames may change format, layout or rate mid-stream (the converter is rebuilt). Non-finite
    samples are replaced by 0 before filtering and counted in :attr:`nonfinite`. Input ``pts``
    are ignored: the output is a plain sample sequence, gaps are not filled.
    """

    def __init__(self, rate: int = ANALYSIS_RATE) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.nonfinite = 0
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> np.ndarray:
        """Convert one frame; returns the (n,) float32 samples that became ready (maybe none)."""
        if frame.samples == 0:
            return np.zeros(0, np.float32)
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        parts = [] if key == self._key else [self.flush()]
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=self.rate, options=_SWR_OPTIONS
            )
            self._key = key
        frame, n_bad = _zero_nonfinite(frame)
        self.nonfinite += n_bad
        parts += [_mono(f) for f in self._resampler.resample(frame)]
        return _join(parts)

    def flush(self) -> np.ndarray:
        """Release the resampler's look-ahead at the end of a stream; the next push starts anew."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = [_mono(f) for f in self._resampler.resample(None)]
        self._resampler = None
        self._key = None
        return _join(tail)

    def reset(self) -> None:
        """Drop the look-ahead and the counters."""
        self._resampler = None
        self._key = None
        self.nonfinite = 0


def _mono(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.float32)
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    # Resampling ringing and float sources can exceed full scale.
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


def resample_poly_mono(
    x: np.ndarray, src_rate: int, dst_rate: int, zero_crossings: int = 32
) -> np.ndarray:
    """Offline zero-phase windowed-sinc resampling of a mono signal (pure numpy reference).

    Output sample ``k`` is the band-limited value at input time ``k * src_rate / dst_rate``
    (the same alignment as FFmpeg's resampler); ``ceil(len(x) * dst / src)`` samples. The
    anti-alias cut-off is 0.95 of the lower Nyquist frequency, with a Kaiser window (beta 8.6).
    """
    x = np.asarray(x, np.float64).reshape(-1)
    g = gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    n_out = -(-len(x) * up // down)
    cutoff = 0.95 * min(1.0, dst_rate / src_rate)  # in units of the input Nyquist
    half = int(np.ceil(zero_crossings / cutoff))  # kernel half-width in input samples
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    taps = np.arange(-half + 1, half + 1)
    out = np.empty(n_out, np.float64)
    for lo in range(0, n_out, 4096):
        k = np.arange(lo, min(lo + 4096, n_out))
        t = k * down / up  # input time of each output sample
        idx = np.floor(t).astype(np.int64)[:, None] + taps[None, :]  # (B, 2 * half)
        d = idx - t[:, None]
        window = np.i0(8.6 * np.sqrt(np.clip(1.0 - (d / half) ** 2, 0.0, None))) / np.i0(8.6)
        out[lo : lo + len(k)] = (padded[idx + half] * cutoff * np.sinc(cutoff * d) * window).sum(1)
    return out.astype(np.float32)


class Decimator:
    """Mono float32 at ``factor * rate`` -> ``rate`` with no held-back samples (streaming).

    A windowed-sinc low-pass (Kaiser, ``taps`` long) applied polyphase: every ``factor`` input
    samples give one output sample at once, so the output count follows the input exactly. The
    signal is delayed by the filter's group delay ((taps - 1) / 2 input samples, ~1 ms for 48 ->
    16 kHz), but nothing waits for future input. libswresample holds back ~1 ms of input
    instead, which makes the motion model wait for one more 20 ms WebRTC packet (+20 ms of
    latency) for every frame.
    """

    def __init__(self, factor: int, rate: int, taps: int = 96, cutoff_hz: float | None = None):
        if factor < 1 or taps < factor:
            raise ValueError("need factor >= 1 and taps >= factor")
        self.factor, self.rate = factor, rate
        fs_in = factor * rate
        fc = (cutoff_hz or 0.49 * rate) / fs_in  # cycles per input sample
        n = np.arange(taps) - (taps - 1) / 2
        h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(taps, 8.0)
        self._h = (h / h.sum()).astype(np.float32)
        self._hist = np.zeros(taps - 1, np.float32)  # the last inputs, for the filter
        self._phase = 0  # input samples since the last output sample

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._hist, np.asarray(samples, np.float32)])
        taps = len(self._h)
        # output k uses inputs ending at absolute position start + k * factor
        first = taps - 1 + (self.factor - 1 - self._phase) % self.factor
        ends = np.arange(first, len(x), self.factor)
        if len(ends):  # every input position is filtered (np.convolve is fast), then kept 1 in k
            out = np.convolve(x, self._h, "valid")[ends - (taps - 1)].astype(np.float32)
        else:
            out = np.zeros(0, np.float32)
        self._phase = (self._phase + len(samples)) % self.factor
        self._hist = x[len(x) - (taps - 1) :].copy()
        return np.clip(out, -1.0, 1.0)

    def flush(self) -> np.ndarray:
        """Nothing is held back: nothing to release."""
        return np.zeros(0, np.float32)

    def reset(self) -> None:
        self._hist[:] = 0
        self._phase = 0


class SwrStream:
    """Mono float32 through libswresample, for ratios that are not an integer decimation (it
    holds back ~1 ms of look-ahead until :meth:`flush`)."""

    def __init__(self, rate: int, input_rate: int) -> None:
        if input_rate <= 0:
            raise ValueError("input_rate must be positive")
        self.input_rate = input_rate
        self._mono = MonoResampler(rate)

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(samples, np.float32).reshape(1, -1)
        if x.shape[1] == 0:
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = self.input_rate
        return self._mono.push(frame)

    def flush(self) -> np.ndarray:
        return self._mono.flush()


MonoStream = Decimator | SwrStream


def mono_stream(rate: int, input_rate: int) -> MonoStream:
    """Streaming mono float32 ``input_rate`` -> ``rate``: the zero-hold :class:`Decimator` when
    the ratio is an integer (48 -> 16 kHz), libswresample otherwise."""
    factor = input_rate // rate
    if factor * rate == input_rate:
        return Decimator(factor, rate)
    return SwrStream(rate, input_rate)
