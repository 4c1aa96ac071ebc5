"""Encode float audio to a file with any PyAV encoder (PCM wav of any depth, flac, mp3, opus...)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def _to_format(audio: np.ndarray, fmt: str) -> np.ndarray:
    """Float in [-1, 1] -> the sample format's numbers (NaN/inf pass through for float formats)."""
    if fmt in ("flt", "dbl"):
        return audio.astype(_DTYPES[fmt])
    if fmt == "u8":
        return np.clip(audio * 127 + 128, 0, 255).astype(np.uint8)
    top = {"s16": 32767, "s32": 2**31 - 1}[fmt]
    return np.clip(audio * top, -top - 1, top).astype(_DTYPES[fmt])


def encode_audio(
    path: Path, codec: str, audio: np.ndarray, rate: int, sample_format: str | None = None
) -> Path:
    """Write ``audio`` ((n,) or (n, channels), float in [-1, 1]) as one stream encoded with
    ``codec``, in ``sample_format`` (default: the codec's first). Channels: 1, 2 or 6 (5.1)."""
    frames = audio[:, None] if audio.ndim == 1 else audio
    layout = _LAYOUTS[frames.shape[1]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        formats = stream.codec_context.codec.audio_formats or []
        fmt = sample_format or (formats[0].name if formats else "s16")
        data = _to_format(frames, fmt.rstrip("p"))
        data = data.T if fmt.endswith("p") else data.reshape(1, -1)  # planar vs packed
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
