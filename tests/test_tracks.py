"""The video ends of the media path: I420 planes made in the render hop, wrapped by the track."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from typing import Any

import av
import cv2
import numpy as np
import pytest

from avatar.clock import FakeClock
from avatar.frames import FrameTiming, VideoFrame
from avatar.profile.profiler import Profiler
from avatar.render.i420 import i420_size, i420_to_video_frame, rgb_to_i420
from avatar.server.tracks import EngineVideoTrack, FrameEncoder


class CountingExecutor(Executor):
    """Runs work inline and counts it: a frame's trips to the executor."""

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        fut: Future[Any] = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(memoryview(p), np.uint8).reshape(-1, p.line_size)[: p.height, : p.width]
        for p in frame.planes
    ]


@pytest.mark.parametrize(("h", "w"), [(64, 64), (512, 512), (65, 67), (64, 67), (65, 64)])
def test_planes_are_the_conversion_the_track_made_before(h: int, w: int) -> None:
    image = _image(h, w)
    i420 = rgb_to_i420(image)
    assert i420.shape == (i420_size(h, w),) and i420.dtype == np.uint8
    if h % 2 or w % 2:  # libswscale, as before
        before = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    else:  # OpenCV, as before
        before = av.VideoFrame.from_ndarray(
            np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), np.uint8), format="yuv420p"
        )
    after = i420_to_video_frame(i420, h, w)
    assert (after.width, after.height, after.format.name) == (w, h, "yuv420p")
    for a, b in zip(_planes(after), _planes(before), strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="I420"):
        i420_to_video_frame(i420[:-1], h, w)


def _frame(i: int, image: np.ndarray, clock: FakeClock, planes: bool) -> VideoFrame:
    now = clock.now_ns()
    timing = FrameTiming(i, 0, 0, 0, now, now, now)
    i420 = rgb_to_i420(image) if planes else None
    return VideoFrame(i, i * 40_000_000, image, timing=timing, i420=i420)


def test_the_track_wraps_planes_on_the_loop_and_converts_only_frames_without() -> None:
    clock = FakeClock()
    profiler = Profiler(clock, 25.0)
    executor = CountingExecutor()
    image = _image(64, 64)

    async def run() -> list[av.VideoFrame]:
        track = EngineVideoTrack(executor, profiler)
        out = []
        for i, planes in enumerate((True, True, False)):
            track.offer(_frame(i, image, clock, planes))
            out.append(await track.recv())
        return out

    made = asyncio.run(run())
    assert executor.calls == 1  # only the frame that came without planes went to the executor
    assert [f.pts for f in made] == [0, 3600, 7200]  # 90 kHz
    for f in made:
        assert np.array_equal(f.to_ndarray(), made[0].to_ndarray())


def test_the_offline_encoder_times_colour_only_where_it_converts() -> None:
    clock = FakeClock()
    profiler = Profiler(clock, 25.0)
    encoder = FrameEncoder(profiler)
    image = _image(64, 64)
    with_planes, without = _frame(0, image, clock, True), _frame(1, image, clock, False)
    encoder.encode(with_planes)
    encoder.encode(without)
    assert with_planes.timing is not None and without.timing is not None
    assert set(with_planes.timing.stages) == {"encode"}  # colour was the render hop's
    assert set(without.timing.stages) == {"colour", "encode"}
    assert [r.index for r in profiler.records] == [0, 1]
