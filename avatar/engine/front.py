"""Stage 1, the audio front: mono audio at any rate -> the output timeline + one analysis branch.

Whatever rate a source pushes (48 kHz from WebRTC, 22.05 kHz from a file, 16 kHz from a TTS
engine), its samples are resampled once to the output rate, the timeline every frame's audio is
cut from, and the result is decimated once to the analysis rate that the speech gate, the features
and the motion model read. The decimator (integer ratio, 48 -> 16 kHz) holds nothing back, so
after ``n`` output samples exactly ``n // factor`` analysis samples exist: analysis sample ``k``
belongs to output samples ``[k * factor, (k + 1) * factor)``. Non-finite input becomes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.audio.resample import Decimator, MonoStream, mono_stream
from avatar.observe import NULL_OBSERVER, Observer
from avatar.units import ANALYSIS_RATE, OUTPUT_RATE


@dataclass(slots=True)
class AudioBlock:
    """One pushed block after the front: the same audio on both timelines."""

    samples: np.ndarray  # (n,) float32 at the output rate
    analysis: np.ndarray  # (about n / factor,) float32 at the analysis rate
    arrival_ns: int  # engine-clock time the block was pushed


class AudioFront:
    """Any-rate mono float32 -> :class:`AudioBlock`; see the module docstring."""

    def __init__(
        self,
        rate: int = OUTPUT_RATE,
        analysis_rate: int = ANALYSIS_RATE,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.factor = rate // analysis_rate
        if self.factor * analysis_rate != rate:
            raise ValueError(f"the output rate {rate} must be a multiple of {analysis_rate}")
        self.rate, self.analysis_rate, self.observer = rate, analysis_rate, observer
        self._analysis = Decimator(self.factor, analysis_rate)
        self._resamplers: dict[int, MonoStream] = {}
        self.samples_out = 0  # output-rate samples so far

    def push(self, samples: np.ndarray, rate: int, arrival_ns: int) -> AudioBlock:
        """Mono float32 samples at ``rate`` that arrived at ``arrival_ns``."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        with self.observer.stage("resample"):
            if rate != self.rate:
                x = self._resampler(rate).push(x)
            return self._block(x, arrival_ns)

    def silence(self, n: int, arrival_ns: int) -> AudioBlock:
        """``n`` output samples of silence (to pad the timeline to a frame boundary)."""
        return self._block(np.zeros(n, np.float32), arrival_ns)

    def _block(self, x: np.ndarray, arrival_ns: int) -> AudioBlock:
        self.samples_out += len(x)
        return AudioBlock(x, self._analysis.push(x), arrival_ns)

    def _resampler(self, rate: int) -> MonoStream:
        rs = self._resamplers.get(rate)
        if rs is None:
            rs = self._resamplers[rate] = mono_stream(self.rate, rate)
        return rs
