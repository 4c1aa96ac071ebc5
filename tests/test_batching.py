"""Cross-session batching: batched calls give what per-session calls give (real motion and GAN
models), errors reach every caller of a batch, a lone request never waits, close stops the worker.

Batches are forced without timing: a gate holds the inner backend's first call until the other
callers' requests are queued, so the next batch has several rows whatever the scheduler does.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.batching import BatchClient, BatchingBackend
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.clock import FakeClock
from avatar.compose.engines import Batchers, executor_workers
from avatar.config import BatchConfig, EngineConfig, MotionConfig, RenderConfig
from avatar.errors import ModelError
from avatar.motion.channels import BATCH_AXES, STATE_NAMES
from avatar.render.gan import GanRenderer
from avatar.units import NS_PER_S
from tests.conftest import WEIGHTS

GAN = Path(__file__).resolve().parents[1] / "avatar" / "avatars" / "carphone" / "gan.onnx"
MS = NS_PER_S // 1000


class GatedBackend:
    """Wraps a backend: records each call's rows; the first call waits for ``release``, so the
    requests made meanwhile queue up and form batches whatever the thread scheduling."""

    def __init__(self, inner: InferenceBackend, fail: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.name, self.meta = inner.name, inner.meta
        self.input_names, self.output_names = inner.input_names, inner.output_names
        self.release = threading.Event()
        self.rows: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows.append(int(inputs[self.input_names[0]].shape[0]))
        if len(self.rows) == 1:
            self.release.wait(30)
        if self.fail:
            raise RuntimeError("the model broke")
        return self.inner.run(inputs)


class EchoBackend:
    """A fake model: ``y = 2 x`` row by row."""

    name = "echo"
    input_names: tuple[str, ...] = ("x",)
    output_names: tuple[str, ...] = ("y",)

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.rows: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rows.append(len(inputs["x"]))
        return {"y": 2 * inputs["x"]}


def _wait_for(cond: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Poll ``cond`` (a safety limit, not a timing assertion: the test fails on what follows)."""
    end = time.monotonic() + limit_s
    while not cond() and time.monotonic() < end:
        time.sleep(0.001)


def _in_threads(
    jobs: Sequence[Callable[[], Any]], then: Callable[[], None] | None = None
) -> list[Any]:
    """Run ``jobs`` in threads (``then`` once they are started); their results or errors."""
    results: list[Any] = [None] * len(jobs)

    def call(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    if then is not None:
        then()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return results


# --- the motion model: streams of different ages and chunk sizes --------------------------


def _hold_worker(batcher: BatchingBackend, gated: GatedBackend, dummy: dict[str, Any]) -> None:
    """Keep the worker busy with a ``dummy`` call until :func:`_release` (errors swallowed)."""

    def call() -> None:
        with contextlib.suppress(Exception):
            batcher.run(dummy)

    threading.Thread(target=call, daemon=True).start()
    _wait_for(lambda: len(gated.rows) == 1)


def _release(batcher: BatchingBackend, gated: GatedBackend, queued: int) -> Callable[[], None]:
    """Once ``queued`` requests wait, let the worker go on: they form batches."""

    def go() -> None:
        _wait_for(lambda: batcher.pending >= queued)
        gated.release.set()

    return go


def _motion_state(meta: dict[str, Any]) -> dict[str, np.ndarray]:
    return {n: np.zeros(s, np.float32) for n, s in meta["state_shapes"].items()}


def _mel(rng: np.random.Generator, frames: int) -> np.ndarray:
    return (rng.standard_normal((1, frames, 80)) * 2 - 5).astype(np.float32)


def _step(backend: InferenceBackend, mel: np.ndarray, state: dict[str, np.ndarray]) -> Any:
    out = {k: v.copy() for k, v in backend.run({"mel": mel, **state}).items()}
    return out, {n: out[f"{n}_out"] for n in STATE_NAMES}


def test_motion_batched_equals_per_session() -> None:
    ort = OrtBackend(WEIGHTS / "motion.onnx")
    ages, frames, steps = [0, 3, 17, 60, 130], [2, 4, 2, 4, 2], 6  # two shape groups
    rng = np.random.default_rng(0)
    starts = []
    for age in ages:  # each stream has heard `age` tokens: its cache_valid differs
        state = _motion_state(ort.meta)
        for _ in range(age // 5):
            state = _step(ort, _mel(rng, 10), state)[1]
        starts.append(state)
    mels = [[_mel(rng, f) for _ in range(steps)] for f in frames]

    def stream(backend: InferenceBackend, k: int) -> list[dict[str, np.ndarray]]:
        state, outs = dict(starts[k]), []
        for mel in mels[k]:
            out, state = _step(backend, mel, state)
            outs.append(out)
        return outs

    reference = [stream(ort, k) for k in range(len(ages))]
    gated = GatedBackend(OrtBackend(WEIGHTS / "motion.onnx"))
    batcher = BatchingBackend(gated, FakeClock(), max_batch=8, max_wait_ms=0,
                              batch_axes=BATCH_AXES)  # fmt: skip
    _hold_worker(batcher, gated, {"mel": _mel(rng, 2), **_motion_state(ort.meta)})
    clients = [batcher.client() for _ in ages]
    jobs = [functools.partial(stream, clients[k], k) for k in range(len(ages))]
    got = _in_threads(jobs, then=_release(batcher, gated, len(ages)))
    batcher.close()
    assert gated.rows[1:3] == [3, 2]  # the first steps: one batch per mel length
    assert batcher.rows == 1 + len(ages) * steps
    for ref, out in zip(reference, got, strict=True):
        assert not isinstance(out, Exception), out
        for r_step, o_step in zip(ref, out, strict=True):
            for name in r_step:
                assert o_step[name].shape == r_step[name].shape
                np.testing.assert_allclose(o_step[name], r_step[name], atol=1e-5, err_msg=name)


def test_streamers_through_clients_give_their_own_frames() -> None:
    """Three sessions' MotionStreamers (clips of other lengths, pushed in other block sizes)
    through one batching worker give the frames each gives on its own backend."""
    from avatar.motion.stream import MotionStreamer

    rng = np.random.default_rng(2)
    clips = [(rng.standard_normal(n) * 0.05).astype(np.float32) for n in (8000, 20000, 33000)]
    blocks = [320, 640, 1280]

    def frames(backend: InferenceBackend, k: int) -> np.ndarray:
        s, clip = MotionStreamer(backend, 25), clips[k]
        out = [f for i in range(0, len(clip), blocks[k]) for f in s.push(clip[i : i + blocks[k]])]
        out += s.flush()
        return np.stack([np.concatenate([f.blendshapes, f.visemes]) for f in out])

    ort = OrtBackend(WEIGHTS / "motion.onnx")
    reference = [frames(ort, k) for k in range(3)]
    batcher = BatchingBackend(OrtBackend(WEIGHTS / "motion.onnx"), FakeClock(), max_wait_ms=0,
                              batch_axes=BATCH_AXES)  # fmt: skip
    clients = [batcher.client() for _ in clips]
    got = _in_threads([functools.partial(frames, clients[k], k) for k in range(3)])
    batcher.close()
    for ref, out in zip(reference, got, strict=True):
        np.testing.assert_allclose(out, ref, atol=1e-5)


# --- the GAN renderer's generator ----------------------------------------------------------


@pytest.mark.skipif(not GAN.exists(), reason="no GAN avatar")
def test_gan_batched_equals_per_session() -> None:
    ort = OrtBackend(GAN)
    rng = np.random.default_rng(1)
    rows = [1, 1, 2, 1, 1]  # one caller sends two frames at once
    inputs = [
        {
            "warped": rng.uniform(-1, 1, (n, 3, 64, 64)).astype(np.float32),
            "sketch": rng.uniform(-1, 1, (n, 3, 64, 64)).astype(np.float32),
            "code": rng.uniform(0, 1, (n, 17)).astype(np.float32),
        }
        for n in rows
    ]
    reference = [ort.run(x)["mouth"].copy() for x in inputs]
    gated = GatedBackend(OrtBackend(GAN))
    batcher = BatchingBackend(gated, FakeClock(), max_batch=4, max_wait_ms=0)
    _hold_worker(batcher, gated, inputs[0])
    jobs = [functools.partial(batcher.run, x) for x in inputs]
    got = _in_threads(jobs, then=_release(batcher, gated, len(inputs)))
    batcher.close()
    assert sum(gated.rows[1:]) == 6 and len(gated.rows) == 3  # 6 rows in two calls of <= 4
    assert max(gated.rows[1:]) <= 4
    for ref, out in zip(reference, got, strict=True):
        np.testing.assert_allclose(out["mouth"], ref, atol=1e-5)


# --- behaviour: errors, a lone request, the deadline, close --------------------------------


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    gated = GatedBackend(EchoBackend(), fail=True)
    batcher = BatchingBackend(gated, FakeClock(), max_batch=8, max_wait_ms=0)
    x = {"x": np.ones((1, 3), np.float32)}
    _hold_worker(batcher, gated, x)
    got = _in_threads([lambda: batcher.run(x)] * 3, then=_release(batcher, gated, 3))
    assert all(isinstance(e, RuntimeError) and "broke" in str(e) for e in got)
    assert gated.rows == [1, 3]  # the three queued behind the first ran as one batch
    batcher.close()


def test_a_lone_request_runs_without_waiting_for_the_deadline() -> None:
    clock = FakeClock()  # time never moves by itself: a request held for its deadline hangs
    echo = EchoBackend()
    batcher = BatchingBackend(echo, clock, max_batch=8, max_wait_ms=40)
    quiet, lone = batcher.client(), batcher.client()
    for _ in range(3):  # a session that called every 40 ms ...
        quiet.run({"x": np.ones((1, 2), np.float32)})
        clock.advance(40 * MS)
    clock.advance(200 * MS)  # ... and went quiet (its model sleeps)
    [out] = _in_threads([lambda: lone.run({"x": np.full((1, 2), 3, np.float32)})])
    np.testing.assert_array_equal(out["y"], np.full((1, 2), 6))
    [out] = _in_threads([lambda: batcher.run({"x": np.ones((2, 2), np.float32)})])
    assert out["y"].shape == (2, 2)
    batcher.close()


def test_a_due_session_is_waited_for_until_the_deadline() -> None:
    clock = FakeClock()
    echo = EchoBackend()
    batcher = BatchingBackend(echo, clock, max_batch=8, max_wait_ms=10)
    a, b = batcher.client(), batcher.client()
    for _ in range(3):  # b calls every 40 ms: t = 0, 40, 80
        b.run({"x": np.ones((1, 1), np.float32)})
        clock.advance(40 * MS)
    echo.rows.clear()  # t = 120: b is due now
    x = np.ones((1, 1), np.float32)
    first = threading.Thread(target=a.run, args=({"x": x},))
    first.start()
    _wait_for(lambda: batcher.pending == 1)  # a waits: b is due before a's deadline
    b.run({"x": x})  # b arrives: one batch of both
    first.join(30)
    assert echo.rows == [2]
    # b's next call is due at t = 160; a at t = 150 waits for it, but only until t = 160
    clock.advance(30 * MS)
    late = threading.Thread(target=a.run, args=({"x": x},))
    late.start()
    _wait_for(lambda: batcher.pending == 1)
    clock.advance(10 * MS)  # the deadline passes and b has not come: a runs alone
    late.join(30)
    assert not late.is_alive()
    assert echo.rows == [2, 1]
    batcher.close()


def test_close_stops_the_worker() -> None:
    batcher = BatchingBackend(EchoBackend(), FakeClock())
    assert batcher.alive
    batcher.close()
    assert not batcher.alive
    with pytest.raises(ModelError, match="closed"):
        batcher.run({"x": np.ones((1, 1), np.float32)})


def test_missing_input_is_the_callers_error() -> None:
    batcher = BatchingBackend(EchoBackend(), FakeClock())
    with pytest.raises(ModelError, match="missing"):
        batcher.run({"z": np.ones((1, 1), np.float32)})
    batcher.close()


# --- composition ----------------------------------------------------------------------------


def test_sessions_share_one_worker_per_model_when_enabled() -> None:
    batchers = Batchers(BatchConfig(enabled=True), FakeClock())
    first, second = batchers.motion(MotionConfig()), batchers.motion(MotionConfig())
    assert first is not second and len(batchers.shared) == 1
    assert first.meta["state_shapes"] == second.meta["state_shapes"]
    if GAN.exists():
        renderer = batchers.renderer(RenderConfig(avatar="carphone", renderer="gan", size=128))
        assert isinstance(renderer, GanRenderer) and isinstance(renderer.backend, BatchClient)
        assert renderer.backend.batcher in batchers.shared.values()
    workers = list(batchers.shared.values())
    batchers.close()
    assert not any(w.alive for w in workers)
    off = Batchers(BatchConfig(enabled=False), FakeClock())
    assert isinstance(off.motion(MotionConfig()), OrtBackend) and not off.shared
    assert executor_workers(EngineConfig(batch=BatchConfig(enabled=True, max_batch=4))) >= 8
