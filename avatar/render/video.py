"""Write rendered frames and their audio to an mp4 (H.264 + AAC), in sync by construction.

Video frame ``i`` has pts ``i`` in a 1/fps time base; its audio chunk starts at sample
``round(i * rate / fps)``: both come from the same frame index, so they cannot drift.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from avatar.errors import AvatarError
from avatar.frames import VideoFrame
from avatar.units import OUTPUT_RATE


class Mp4Writer:
    def __init__(self, path: Path, fps: float, size: int, audio_rate: int = OUTPUT_RATE) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(path), "w", format="mp4")
        except (OSError, av.FFmpegError) as e:
            raise AvatarError(f"cannot write {path}: {e}") from None
        rate = Fraction(fps).limit_denominator(1001)
        self._video = self._out.add_stream("libx264", rate=rate)
        self._video.width = self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": "20", "preset": "veryfast"}
        self._video.time_base = 1 / rate
        self._audio = self._out.add_stream("aac", rate=audio_rate, layout="mono")
        self._audio_rate = audio_rate
        self._samples = 0
        self.frames = 0

    def write(self, frame: VideoFrame) -> None:
        vf = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        vf.pts = frame.index
        for packet in self._video.encode(vf):
            self._out.mux(packet)
        if frame.audio is not None:
            self._write_audio(frame.audio.samples)
        self.frames += 1

    def _write_audio(self, samples: np.ndarray) -> None:
        pcm = np.clip(samples, -1, 1).astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        af.sample_rate = self._audio_rate
        af.pts = self._samples
        self._samples += pcm.shape[1]
        for packet in self._audio.encode(af):
            self._out.mux(packet)

    def close(self) -> None:
        for stream in (self._video, self._audio):
            for packet in stream.encode(None):
                self._out.mux(packet)
        self._out.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()
