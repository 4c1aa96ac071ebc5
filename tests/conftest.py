"""Shared fixtures: fake backends that implement the real protocol, audio file writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.audio.write import encode_mono  # noqa: F401 - re-exported for tests
from avatar.config import FeatureConfig

WEIGHTS = Path(__file__).resolve().parents[1] / "avatar" / "weights"


class CountingBackend:
    """A motion 'model' whose token n outputs n/1000 on every blendshape (checks frame timing).

    It implements :class:`avatar.backend.InferenceBackend` with the real state names and shapes.
    """

    name = "counting"
    input_names = ("mel", "conv1_state", "conv2_state", "k_cache", "v_cache", "cache_valid")
    output_names = (
        "blendshapes",
        "visemes",
        "conv1_state_out",
        "conv2_state_out",
        "k_cache_out",
        "v_cache_out",
        "cache_valid_out",
    )

    def __init__(self, lookahead_tokens: int = 3) -> None:
        self.meta: dict[str, Any] = {
            "dims": {"frames_per_token": 2, "lookahead_tokens": lookahead_tokens},
            "features": FeatureConfig().model_dump(),
            "state_shapes": {
                "conv1_state": [1, 1],
                "conv2_state": [1, 1],
                "k_cache": [1, 1],
                "v_cache": [1, 1],
                "cache_valid": [1, 1],
            },
        }
        self.calls: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = inputs["mel"].shape[1] // 2
        start = int(inputs["conv1_state"][0, 0])
        self.calls.append(t)
        idx = (start + np.arange(t, dtype=np.float32)) / 1000.0
        bs = np.repeat(idx[None, :, None], 16, axis=2)
        vis = np.full((1, t, 15), 1 / 15, np.float32)
        counter = np.array([[start + t]], np.float32)
        return {
            "blendshapes": bs,
            "visemes": vis,
            "conv1_state_out": counter,
            "conv2_state_out": counter,
            "k_cache_out": counter,
            "v_cache_out": counter,
            "cache_valid_out": counter,
        }


@pytest.fixture
def counting_backend() -> CountingBackend:
    return CountingBackend()


def write_wav(path: Path, audio: np.ndarray, rate: int, fmt: str = "s16") -> Path:
    """Write mono or (n, channels) audio with PyAV in the given sample format."""
    import av

    audio = np.atleast_2d(audio.T).T if audio.ndim == 1 else audio
    if audio.ndim == 1:
        audio = audio[:, None]
    channels = audio.shape[1]
    codec = {"s16": "pcm_s16le", "u8": "pcm_u8", "flt": "pcm_f32le", "s32": "pcm_s32le"}[fmt]
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if fmt == "s16":
            data = np.clip(audio * 32767, -32768, 32767).astype(np.int16)
        elif fmt == "u8":
            data = np.clip(audio * 127 + 128, 0, 255).astype(np.uint8)
        elif fmt == "s32":
            data = np.clip(audio * 2147483647, -(2**31), 2**31 - 1).astype(np.int32)
        else:
            data = audio.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """A few seconds of espeak-ng speech at 16 kHz with pauses (skips if espeak is absent)."""
    try:
        from avatar.data import augment as aug
        from avatar.data.espeak import EspeakSynth, Prosody
    except ImportError as e:
        pytest.skip(f"training extras missing: {e}")
    try:
        synth = EspeakSynth()
    except Exception as e:
        pytest.skip(f"espeak-ng unavailable: {e}")
    synth.set_voice("en-gb-scotland", Prosody(rate=150))
    utt = synth.synthesize("Bob bought a big map. Who knew? Papa made more bread.", "t", "t")
    return aug.clean(utt).audio
