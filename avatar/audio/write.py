"""Encode mono float audio to a file with any PyAV encoder (wav, flac, mp3, opus, aac)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

_DTYPES = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}
_SCALE = {"s16": 32767, "s32": 2**31 - 1, "flt": 1, "dbl": 1}


def encode_mono(path: Path, codec: str, audio: np.ndarray, rate: int) -> Path:
    """Write ``audio`` (float in [-1, 1]) as one mono stream encoded with ``codec``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        formats = stream.codec_context.codec.audio_formats or []
        fmt = formats[0].name if formats else "s16"
        base = fmt.rstrip("p")
        data = (np.clip(audio, -1, 1) * _SCALE[base]).astype(_DTYPES[base])[None]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
