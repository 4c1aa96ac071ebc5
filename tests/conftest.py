"""Shared fixtures: fake backends that implement the real protocol, audio file writers."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from avatar.audio.write import encode_audio
from avatar.backends.protocol import InferenceBackend
from avatar.config import FeatureConfig

if TYPE_CHECKING:
    from avatar.face.store import AvatarAssets
    from avatar.frames import MotionFrame

# tests/agents needs pipecat-ai and livekit-agents, which `make test` installs into .venv-agents and
# runs there (`.venv-agents/bin/pytest tests/agents`); in .venv (mediapipe: protobuf < 5) they are
# not installed, so the folder is left out of that run rather than skipped test by test.
collect_ignore = [] if find_spec("pipecat") and find_spec("livekit") else ["agents"]

WEIGHTS = Path(__file__).resolve().parents[1] / "avatar" / "weights"


class CountingBackend:
    """A motion 'model' whose token n outputs n/1000 on every blendshape (checks frame timing).

    It implements :class:`avatar.backends.protocol.InferenceBackend` with the real state names
    and shapes.
    """

    name = "counting"
    input_names: tuple[str, ...] = (
        "mel",
        "conv1_state",
        "conv2_state",
        "k_cache",
        "v_cache",
        "cache_valid",
    )
    output_names: tuple[str, ...] = (
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


_: type[InferenceBackend] = CountingBackend  # mypy checks that the fake is the real protocol


@pytest.fixture
def counting_backend() -> CountingBackend:
    return CountingBackend()


def write_wav(path: Path, audio: np.ndarray, rate: int, fmt: str = "s16") -> Path:
    """Write mono or (n, channels) audio as a wav in sample format ``fmt`` (u8/s16/s32/flt)."""
    codec = {"s16": "pcm_s16le", "u8": "pcm_u8", "flt": "pcm_f32le", "s32": "pcm_s32le"}[fmt]
    return encode_audio(path, codec, audio, rate, fmt)


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


@pytest.fixture(scope="session")
def default_avatar() -> AvatarAssets:
    """The bundled default avatar (astronaut photo, prepared and committed)."""
    from avatar.face.store import load_avatar

    return load_avatar("default")


def motion_frame(index: int = 0, blink: float = 0.0, **shapes: float) -> MotionFrame:
    """A MotionFrame with the named ARKit blendshapes set, the rest 0."""
    from avatar.frames import MotionFrame
    from avatar.motion.channels import BLENDSHAPE_INDEX

    bs = np.zeros(16, np.float32)
    for name, value in shapes.items():
        bs[BLENDSHAPE_INDEX[name]] = value
    return MotionFrame(index, index * 40_000_000, bs, np.zeros(15, np.float32), blink=blink)


# Tests whose results come out of vectorised maths (numpy ufuncs, BLAS, onnxruntime, OpenCV):
# CI runs them a second time on another SIMD dispatch path (scripts/second_simd_path.py), so a
# comparison that only holds on the build machine's CPU fails here too.
NUMERIC_MODULES = frozenset({
    "test_features", "test_resample", "test_stream", "test_model", "test_backends", "test_warp",
    "test_gan", "test_vad", "test_engine", "test_pipeline",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module if isinstance(item, pytest.Function) else None
        if module is not None and module.__name__.split(".")[-1] in NUMERIC_MODULES:
            item.add_marker(pytest.mark.numeric)


def pytest_report_header() -> str:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    on = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    return f"numpy SIMD dispatch targets in use: {' '.join(on) or 'baseline only'}"
