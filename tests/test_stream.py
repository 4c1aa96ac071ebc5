"""MotionStreamer: frame timing, interpolation, chunking invariance, flush."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatar.motion.stream import MotionStreamer
from tests.conftest import CountingBackend


def _run(backend: CountingBackend, audio: np.ndarray, fps: float, block: int) -> list:
    s = MotionStreamer(backend, fps)
    frames = []
    for k in range(0, len(audio), block):
        frames += s.push(audio[k : k + block])
    return frames + s.flush()


@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0])
def test_one_frame_per_video_frame_with_exact_timing(fps: float) -> None:
    audio = np.zeros(16000 * 2 + 1234, np.float32)
    frames = _run(CountingBackend(), audio, fps, 16000)
    assert len(frames) == math.ceil(len(audio) / 16000 * fps)
    assert [f.index for f in frames] == list(range(len(frames)))
    for f in frames:
        # token n animates (n + 1) * 20 ms - 60 ms: frame i sits at token i/fps/0.02 + 2
        expected = (f.index / fps + 0.06) / 0.02 - 1
        assert f.blendshapes[0] == pytest.approx(expected / 1000, abs=1e-6)
        assert f.pts_ns == round(f.index * 1e9 / fps)


def test_chunk_sizes_do_not_change_the_result() -> None:
    audio = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    ref = _run(CountingBackend(), audio, 25, len(audio))
    for block in (1, 37, 160, 320, 641, 5000):
        got = _run(CountingBackend(), audio, 25, block)
        assert len(got) == len(ref)
        assert all(
            np.array_equal(a.blendshapes, b.blendshapes) for a, b in zip(got, ref, strict=True)
        )


def test_frames_are_emitted_as_soon_as_their_audio_arrived() -> None:
    backend = CountingBackend()
    s = MotionStreamer(backend, 25)
    pushed = 0
    for _ in range(100):
        frames = s.push(np.zeros(320, np.float32))  # 20 ms, like the server
        pushed += 320
        for f in frames:
            assert f.index / 25 + s.latency_s <= pushed / 16000 + 1e-9
        # nothing that could have been emitted is held back
        ready = math.floor((pushed / 16000 - s.latency_s) * 25 + 1e-9) + 1
        assert s._next_frame == max(ready, 0)


def test_memory_stays_bounded_over_a_long_stream() -> None:
    s = MotionStreamer(CountingBackend(), 25)
    block = np.zeros(16000, np.float32)
    for _ in range(600):  # ten minutes
        s.push(block)
    assert len(s._bs) < 10 and len(s._mel) < 4


@pytest.mark.parametrize("lead_s", [0.04, 0.06])
def test_a_lead_shows_each_frame_the_motion_of_its_sound_that_much_later(lead_s: float) -> None:
    audio = np.zeros(16000 * 2, np.float32)
    plain = _run(CountingBackend(), audio, 25, 640)
    s = MotionStreamer(CountingBackend(), 25, lead_s=lead_s)
    led = [f for k in range(0, len(audio), 640) for f in s.push(audio[k : k + 640])] + s.flush()
    assert len(led) == len(plain)  # the same frames, each showing later sound
    for f in led[:-3]:
        # frame i shows what a frame at i / fps + lead would show without a lead
        expected = (f.index / 25 + lead_s + 0.06) / 0.02 - 1
        assert f.blendshapes[0] == pytest.approx(expected / 1000, abs=1e-6)
    assert s.latency_s == pytest.approx(0.06 + lead_s)  # and the lead is waited for


def test_a_negative_lead_is_refused() -> None:
    with pytest.raises(ValueError, match="lead"):
        MotionStreamer(CountingBackend(), 25, lead_s=-0.02)
