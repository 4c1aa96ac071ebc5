"""Write rendered frames and their audio to a file, in sync by construction: an mp4 (H.264 +
AAC, the default) or a WebM (VP9 + Opus).

Video frame ``i`` has pts ``i`` in a 1/fps time base; its audio chunk starts at sample
``round(i * rate / fps)``: both come from the same frame index, so they cannot drift.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np

from avatar.errors import AvatarError
from avatar.frames import VideoFrame
from avatar.units import OUTPUT_RATE

Container = Literal["mp4", "webm"]
VP9_OPTIONS = {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"}
# container -> (video codec, its options, audio codec)
CODECS: dict[str, tuple[str, dict[str, str], str]] = {
    "mp4": ("libx264", {"crf": "20", "preset": "veryfast"}, "aac"),
    "webm": ("libvpx-vp9", VP9_OPTIONS, "libopus"),
}


class VideoWriter:
    def __init__(
        self, path: Path, fps: float, size: int, audio_rate: int = OUTPUT_RATE,
        container: Container = "mp4",
    ) -> None:  # fmt: skip
        video_codec, options, audio_codec = CODECS[container]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(path), "w", format=container)
        except (OSError, av.FFmpegError) as e:
            raise AvatarError(f"cannot write {path}: {e}") from None
        rate = Fraction(fps).limit_denominator(1001)
        video = self._out.add_stream(video_codec, rate=rate)
        audio = self._out.add_stream(audio_codec, rate=audio_rate, layout="mono")
        assert isinstance(video, av.VideoStream) and isinstance(audio, av.AudioStream)
        self._video, self._audio = video, audio
        self._video.width = self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.options = dict(options)
        self._video.time_base = 1 / rate
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

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()
