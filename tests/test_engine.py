"""The engine contract on injected clocks: tiling, silence gate, live policy, interruption."""

from __future__ import annotations

import asyncio
import itertools
import math
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import pytest

from avatar.audio.io import iter_audio
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock, FakeClock, SteppedClock
from avatar.config import EngineConfig, VadConfig
from avatar.engine import AvatarEngine
from avatar.engine.budget import TickPhase
from avatar.errors import AudioInputError
from avatar.frames import AudioChunk, MotionFrame, SpeechEventKind, VideoFrame
from avatar.render.base import Renderer
from avatar.render.i420 import rgb_to_i420
from tests.conftest import WEIGHTS

SAMPLE = WEIGHTS.parent / "assets" / "sample.ogg"
MS = 1_000_000


class InlineExecutor(Executor):
    """Runs work at once on the calling thread: the engine's order of events becomes exact."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


class JawRenderer:
    """A renderer whose pixels are the jaw opening (0-255): mouth motion read from frames."""

    name = "jaw"
    size = 8

    def __init__(self, clock: SteppedClock | None = None, cost_ns: int = 0) -> None:
        self.clock, self.cost_ns, self.calls = clock, cost_ns, 0

    def render(self, motion: MotionFrame) -> np.ndarray:
        self.calls += 1
        if self.clock is not None and self.cost_ns:
            self.clock.spend(self.cost_ns)
        value = round(float(motion.blendshapes[0]) * 255)
        return np.full((self.size, self.size, 3), value, np.uint8)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return np.concatenate(list(iter_audio(SAMPLE, rate=48000, block_s=1.0)))


@pytest.fixture(scope="module")
def backend() -> OrtBackend:
    return OrtBackend(WEIGHTS / "motion.onnx")


def make_engine(
    backend: InferenceBackend, clock: Clock, renderer: Renderer | None = None, **kw: Any
) -> AvatarEngine:
    renderer = renderer or JawRenderer()
    return AvatarEngine(
        backend, renderer, clock, EngineConfig(), VadConfig(), 25.0, executor=InlineExecutor(), **kw
    )


async def run_offline(
    engine: AvatarEngine, audio: np.ndarray, block: int = 960, rate: int = 48000
) -> list[VideoFrame]:
    for i in range(0, len(audio), block):
        engine.push_audio(AudioChunk(audio[i : i + block], rate))
    engine.end_input()
    return [f async for f in engine]


def test_offline_frames_tile_the_audio_and_follow_speech(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    audio = np.concatenate([np.zeros(48000, np.float32), speech, np.zeros(48000, np.float32)])
    engine = make_engine(backend, FakeClock(), realtime=False)
    frames = asyncio.run(run_offline(engine, audio))
    assert len(frames) == -(-len(audio) // 1920)
    joined = np.concatenate([f.audio.samples for f in frames if f.audio is not None])
    assert np.array_equal(joined[: len(audio)], audio)
    assert [f.pts_ns for f in frames] == [i * 40 * MS for i in range(len(frames))]
    speaking = np.array([f.motion is not None and f.motion.is_speech for f in frames])
    assert not speaking[:20].any() and not speaking[-15:].any()  # silence: model asleep
    assert speaking[30:200].mean() > 0.9
    jaw = np.array([f.image[0, 0, 0] for f in frames])
    assert jaw[30:200].max() > 80 and jaw[:20].max() == 0  # the mouth moves only in speech
    kinds = [e.kind for f in frames for e in f.events]
    assert kinds == [SpeechEventKind.START, SpeechEventKind.END]
    assert engine.stats.filled == engine.stats.skipped == engine.stats.late == 0


def test_buffered_input_leads_the_sound_and_a_microphone_does_not(backend: OrtBackend) -> None:
    cfg = EngineConfig(lead_ms=60, live_lead_ms=0)
    buffered = AvatarEngine(backend, JawRenderer(), FakeClock(), cfg, VadConfig(), 25.0,
                            executor=InlineExecutor())  # fmt: skip
    live = AvatarEngine(backend, JawRenderer(), FakeClock(), cfg, VadConfig(), 25.0, live=True,
                        executor=InlineExecutor())  # fmt: skip
    assert buffered.motion.lead_s == 0.06 and live.motion.lead_s == 0.0
    # the buffered engine waits for the sound its mouth runs ahead to: 60 ms more audio
    assert buffered.motion.delay - live.motion.delay == 60 * 48


def test_block_sizes_do_not_change_what_the_avatar_does(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    # A short clip: one word between pauses. Pushed as one block (a file, a TTS chunk) it must
    # animate as when it arrives in 20 ms packets (a microphone). Only at the wake point may a
    # big block show more: frames whose audio had already passed when the packet that woke the
    # model arrived were sent idle, while a block holding the onset is animated from the
    # pre-roll's first frame on.
    word = speech[: int(1.2 * 48000)]
    audio = np.concatenate([np.zeros(14400, np.float32), word, np.zeros(48000, np.float32)])
    runs = {}
    for block in (960, 48000, len(audio)):
        engine = make_engine(backend, FakeClock(), realtime=False)
        runs[block] = asyncio.run(run_offline(engine, audio, block=block))
    ref = runs[960]
    speaking = np.array([f.motion is not None and f.motion.is_speech for f in ref])
    assert speaking.sum() > 10
    ref_jaw = np.array([int(f.image[0, 0, 0]) for f in ref])
    for block, frames in runs.items():
        awake = np.array([f.motion is not None and f.motion.is_speech for f in frames])
        assert len(frames) == len(ref) and (awake >= speaking).all(), block
        extra = np.flatnonzero(awake & ~speaking)
        preroll_frames = EngineConfig().preroll_ms // 40
        assert len(extra) <= preroll_frames and (extra < np.flatnonzero(speaking)[0]).all(), block
        jaw = np.array([int(f.image[0, 0, 0]) for f in frames])
        # onnxruntime batches 20 ms and 1 s pushes differently: float rounding of the jaw only
        assert np.abs(jaw - ref_jaw)[speaking].max() <= 2, block


def test_silence_costs_no_model_and_half_the_renders(backend: OrtBackend) -> None:
    rng = np.random.default_rng(0)
    quiet = (0.002 * rng.standard_normal(48000 * 4)).astype(np.float32)  # room noise, no voice
    renderer = JawRenderer()
    engine = make_engine(backend, FakeClock(), renderer, realtime=False)
    frames = asyncio.run(run_offline(engine, quiet))
    assert len(frames) == 100
    assert engine.motion.model_pushes == 0 and engine.stats.model_frames == 0
    assert all(f.motion is not None and not f.motion.is_speech for f in frames)
    assert renderer.calls < 0.7 * len(frames)  # idle frames rendered every 2nd (blinks always)


def test_odd_rates_are_resampled_and_bad_input_is_refused(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    engine = make_engine(backend, FakeClock(), realtime=False)
    x = speech[::2][: 22050 * 2].copy()  # treat as 22.05 kHz: 2 s
    x[100] = np.nan
    frames = asyncio.run(run_offline(engine, x, block=441, rate=22050))
    assert abs(len(frames) - 50) <= 1
    assert all(np.isfinite(f.audio.samples).all() for f in frames if f.audio is not None)
    with pytest.raises(AudioInputError, match="sample rate"):
        make_engine(backend, FakeClock()).push_audio(AudioChunk(np.zeros(10, np.float32), 0))
    # input has no timeline and no speech flag of its own: refused, not ignored
    for chunk in (AudioChunk(x[:960], 48000, pts_ns=20 * MS), AudioChunk(x[:960], 48000, 0, False)):
        with pytest.raises(AudioInputError, match="pts_ns or is_speech"):
            make_engine(backend, FakeClock()).push_audio(chunk)


async def _live(backend: OrtBackend, speech: np.ndarray, cost_ns: int = 0) -> dict[str, Any]:
    clock = SteppedClock()
    engine = make_engine(backend, clock, JawRenderer(clock, cost_ns), live=True)
    frames: list[VideoFrame] = []

    async def consume() -> None:
        async for f in engine:
            frames.append(f)

    task = asyncio.create_task(consume())
    engine.start()
    audio = np.concatenate([np.zeros(24000, np.float32), speech])

    sent = 0

    async def feed(until_s: float) -> None:
        # a microphone: packet k is captured at k * 20 ms and pushed once the clock reaches it
        nonlocal sent
        while sent < until_s * 48000 and sent < len(audio):
            while sent <= clock.now_ns() * 48000 // 1_000_000_000 and sent < len(audio):
                engine.push_audio(AudioChunk(audio[sent : sent + 960], 48000))
                sent += 960
            await clock.advance(20 * MS)

    await feed(3.0)
    before = [f.timing.latency_ns for f in frames[-25:] if f.timing and f.timing.source_index >= 0]
    await clock.advance(2000 * MS)  # a stall: the next 2 s of packets arrive at once
    await feed(len(audio) / 48000)
    after = [f.timing.latency_ns for f in frames[-25:] if f.timing and f.timing.source_index >= 0]
    pending = engine.pending_audio_s
    await engine.aclose()
    task.cancel()
    return {"engine": engine, "frames": frames, "before": before, "after": after,
            "pending_s": pending}  # fmt: skip


def test_frames_carry_their_i420_planes_made_after_the_marker(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    renderer = JawRenderer()
    renderer.size = 32  # room for the 24-pixel sync marker
    cfg = EngineConfig(sync_marker=True)
    audio = np.concatenate([np.zeros(24000, np.float32), speech[: 48000 * 2]])
    engine = AvatarEngine(backend, renderer, FakeClock(), cfg, VadConfig(), 25.0, realtime=False,
                          executor=InlineExecutor(), i420=True)  # fmt: skip
    frames = asyncio.run(run_offline(engine, audio))
    plain = asyncio.run(run_offline(make_engine(backend, FakeClock(), JawRenderer()), audio[:4800]))
    assert all(f.i420 is None for f in plain)  # only engines built for an encoder convert
    assert any((f.image[:24, :24] == 255).all() for f in frames)  # some audio was loud
    for f in frames:
        assert f.i420 is not None and np.array_equal(f.i420, rgb_to_i420(f.image))
    repeats = [(a, b) for a, b in itertools.pairwise(frames) if a.image is b.image]
    assert repeats and all(a.i420 is b.i420 for a, b in repeats)  # idle repeats convert once


def test_live_stream_returns_to_live_after_a_stall(backend: OrtBackend, speech: np.ndarray) -> None:
    r = asyncio.run(_live(backend, speech))
    engine, frames = r["engine"], r["frames"]
    assert engine.stats.skipped >= 40  # the 2 s backlog was dropped, not played late
    assert r["pending_s"] < 0.2  # and is not counted as waiting (it was: 2.04 s)
    assert np.median(r["after"]) <= np.median(r["before"]) + 20 * MS  # no accumulated delay
    assert max(r["before"]) <= 140 * MS
    pts = [f.pts_ns for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


def test_slow_renders_skip_ticks_instead_of_falling_behind(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    r = asyncio.run(_live(backend, speech, cost_ns=70 * MS))  # each render takes ~2 ticks
    engine = r["engine"]
    assert engine.stats.late > 0.3 * engine.stats.frames
    assert engine.stats.frames + engine.stats.late >= 0.95 * len(speech) / 1920  # ticks kept time
    assert np.median(r["after"]) <= np.median(r["before"]) + 40 * MS
    assert max(r["before"]) <= 300 * MS


def test_clear_buffer_interrupts_buffered_speech(backend: OrtBackend, speech: np.ndarray) -> None:
    async def run() -> tuple[list[VideoFrame], AvatarEngine]:
        clock = SteppedClock()
        engine = make_engine(backend, clock)  # buffered (text-to-speech): nothing skipped
        engine.push_audio(AudioChunk(speech, 48000))  # 8 s queued at once
        frames: list[VideoFrame] = []
        engine.start()
        it = aiter(engine)
        for _ in range(50):
            await clock.advance(40 * MS)
            frames.append(await anext(it))
        engine.clear_buffer()
        for _ in range(30):
            await clock.advance(40 * MS)
            frames.append(await anext(it))
        await engine.aclose()
        return frames, engine

    frames, engine = asyncio.run(run())
    assert engine.stats.skipped == 0
    assert sum(f.motion is not None and f.motion.is_speech for f in frames[10:50]) > 30
    after = frames[52:]
    assert all(f.audio is not None and not f.audio.samples.any() for f in after)
    assert not any(f.motion is not None and f.motion.is_speech for f in after)


def test_speech_after_an_interruption_is_a_new_utterance(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    """clear_buffer resets every analysis stage: speech pushed after it starts afresh (a new
    speech_start), and nothing of the interrupted utterance (motion, events) rides along."""

    async def run() -> list[VideoFrame]:
        clock = SteppedClock()
        engine = make_engine(backend, clock)
        engine.push_audio(AudioChunk(speech[: 3 * 48000], 48000))  # mid-sentence at the clear
        engine.start()
        it = aiter(engine)
        for _ in range(40):
            await clock.advance(40 * MS)
            await anext(it)
        engine.clear_buffer()
        engine.push_audio(AudioChunk(speech[: 3 * 48000], 48000))
        frames = []
        for _ in range(60):
            await clock.advance(40 * MS)
            frames.append(await anext(it))
        await engine.aclose()
        return frames

    frames = asyncio.run(run())
    kinds = [e.kind for f in frames for e in f.events]
    assert kinds[:1] == [SpeechEventKind.START], kinds  # the new utterance, not the old one's end
    first_speech = next(
        i for i, f in enumerate(frames) if f.motion is not None and f.motion.is_speech
    )
    assert any(
        e.kind == SpeechEventKind.START for f in frames[: first_speech + 1] for e in f.events
    )


def test_tick_phase_moves_ticks_to_just_after_frames_are_ready() -> None:
    phase = TickPhase(40 * MS, window=5, margin_ns=5 * MS)
    shifts = [phase.observe(t * 40 * MS, t * 40 * MS - 25 * MS, 0) for t in range(5)]
    assert shifts[-1] == (-20 * MS, False)  # waited 25 ms each time: ticks move 20 ms earlier
    trims = [phase.observe(t * 40 * MS, t * 40 * MS - 1 * MS, 1) for t in range(5)]
    assert trims[-1] == (0, True)  # a frame always waiting: one is skipped
    phase.observe(0, None, 0)  # nothing ready at 0 ms, the frame came at 12 ms
    assert phase.observe(40 * MS, 12 * MS, 0)[0] == (12 + 5 - 40) * MS


class FlakyBackend:
    """The real model, except that calls ``fail_from`` to ``fail_to`` raise (a model fault)."""

    def __init__(self, real: InferenceBackend, fail_from: int, fail_to: int) -> None:
        self.real, self.fail_from, self.fail_to, self.calls = real, fail_from, fail_to, 0
        self.name, self.meta = real.name, real.meta
        self.input_names, self.output_names = real.input_names, real.output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.fail_from <= self.calls <= self.fail_to:
            raise RuntimeError("model fault (test)")
        return self.real.run(inputs)


class FlakyRenderer(JawRenderer):
    """Raises on speech frames from the ``fail_from``-th call on (a renderer fault)."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from

    def render(self, motion: MotionFrame) -> np.ndarray:
        if self.calls >= self.fail_from and motion.is_speech:
            self.calls += 1
            raise RuntimeError("renderer fault (test)")
        return super().render(motion)


def test_a_model_fault_gives_the_idle_avatar_and_an_error_then_speech_again(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    clean = asyncio.run(run_offline(make_engine(backend, FakeClock()), speech))
    flaky = FlakyBackend(backend, 3, 6)
    engine = make_engine(flaky, FakeClock())
    frames = asyncio.run(run_offline(engine, speech))
    # the timeline goes on; each failed block drops its own audio and the frames the model was
    # holding back (its look-ahead and the mouth's lead), nothing more
    held = math.ceil(engine.motion.delay / (48000 / 25))
    faulted = flaky.fail_to - flaky.fail_from + 1
    assert len(clean) - faulted * (1 + held) <= len(frames) < len(clean)
    assert all(b.pts_ns - a.pts_ns == 40 * MS for a, b in itertools.pairwise(frames))
    faults = engine.take_faults()
    assert faults and "motion model failed" in faults[0] and engine.faults_total == len(faults)
    jaw = np.array([f.image[0, 0, 0] for f in frames], np.float32)
    assert jaw.max() > 60  # the model came back: the mouth moves with later speech
    assert flaky.calls > 6


def test_a_renderer_fault_shows_the_idle_face_and_is_reported(
    backend: OrtBackend, speech: np.ndarray
) -> None:
    engine = make_engine(backend, FakeClock(), renderer=FlakyRenderer(fail_from=30))
    frames = asyncio.run(run_offline(engine, speech))
    faults = engine.take_faults()
    assert faults and all("renderer failed" in f for f in faults)
    assert engine.take_faults() == []  # each fault reported once
    late = [f.image for f in frames[60:] if f.motion is not None and f.motion.is_speech]
    assert late and all(int(img[0, 0, 0]) == 0 for img in late)  # the idle (closed) face
