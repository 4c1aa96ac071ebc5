"""LiveKit Agents' avatar side: our generator under LiveKit's own ``AvatarRunner``,
``QueueAudioOutput`` and ``AVSynchronizer``, the published local tracks read back with
``rtc.VideoStream`` / ``rtc.AudioStream``.

The room is a fake that implements what the runner calls (``on``/``off``, ``isconnected``,
``local_participant.publish_track``, the publication's ``wait_for_subscription``): nothing
reaches a LiveKit server (none runs here), so joining a room, the SFU, byte streams and RPCs
are not tested. Real time: the synchroniser and the audio source pace on the wall clock; the
tests assert what plays with what, never how fast.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from livekit import api, rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarRunner,
    QueueAudioOutput,
    VideoGenerator,
)
from livekit.agents.voice.io import PlaybackFinishedEvent

from avatar.backends.onnxruntime import OrtBackend
from avatar.clock import MonotonicClock
from avatar.compose.engines import build_engine
from avatar.config import Config
from avatar.data.tts import speak
from avatar.engine.engine import AvatarEngine
from avatar.frames import MotionFrame, VideoFrame
from avatar.integrations.livekit import (
    AvatarSession,
    AvatarVideoGenerator,
    audio_frame,
    avatar_worker_token,
)
from tests.conftest import WEIGHTS

FRAME_S = 0.04  # 25 fps
RATE = 48_000
SIZE = 64
LOUD = 300  # int16


class CodeRenderer:
    """Left half: a code of the frame's index (tells frames apart after I420); right half:
    bright while the avatar speaks. :meth:`hold` stops it inside the next speech frame."""

    name = "code"
    size = SIZE

    def __init__(self) -> None:
        self.holding = False
        self.entered, self.released = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.released.clear()
        self.holding = True

    def release(self) -> None:
        self.holding = False
        self.released.set()

    def render(self, motion: MotionFrame) -> np.ndarray:
        if self.holding and motion.is_speech:  # the engine's executor thread waits here
            self.entered.set()
            self.released.wait(5.0)
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        image[:, : SIZE // 2] = 20 + (motion.index * 3) % 210
        image[:, SIZE // 2 :] = 235 if motion.is_speech else 16
        return image


class FakePublication:
    async def wait_for_subscription(self) -> None:
        return None


class FakeParticipant:
    """Keeps the tracks the runner publishes, for the test to read back."""

    def __init__(self) -> None:
        self.tracks: dict[int, Any] = {}
        self.published = asyncio.Event()

    async def publish_track(self, track: Any, options: Any) -> FakePublication:
        self.tracks[track.kind] = track
        if len(self.tracks) == 2:
            self.published.set()
        return FakePublication()


class FakeRoom(rtc.EventEmitter[str]):
    """What ``AvatarRunner`` calls on a room, connected, publishing to nobody."""

    def __init__(self) -> None:
        super().__init__()
        self.local_participant = FakeParticipant()

    def isconnected(self) -> bool:
        return True


class RecordingEngine:
    """The engine, noting every frame it hands out: which image goes with which audio."""

    def __init__(self, engine: AvatarEngine) -> None:
        self.engine = engine
        self.frames: list[VideoFrame] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def __aiter__(self) -> RecordingEngine:
        self.engine.start()
        return self

    async def __anext__(self) -> VideoFrame:
        frame = await self.engine.__anext__()
        self.frames.append(frame)
        return frame


class Tap(VideoGenerator):
    """A ``VideoGenerator`` that hands the runner what ours makes and notes what and when."""

    def __init__(self, generator: AvatarVideoGenerator) -> None:
        self.generator = generator
        self.handed: list[tuple[float, Any]] = []

    async def push_audio(self, frame: Any) -> None:
        await self.generator.push_audio(frame)

    def clear_buffer(self) -> Any:
        return self.generator.clear_buffer()

    def __aiter__(self) -> Tap:
        return self

    async def __anext__(self) -> Any:
        item = await self.generator.__anext__()
        self.handed.append((asyncio.get_running_loop().time(), item))
        return item


@dataclass
class Readback:
    """The published tracks as a subscriber would get them. Times are when each source let the
    media go, on the monotonic clock: a video frame's capture time (``timestamp_us``), audio
    chunks' play time (:meth:`sound`)."""

    video: list[tuple[float, int, bool]] = field(default_factory=list)  # time, code, speaking
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # arrival, int16
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    streams: list[Any] = field(default_factory=list)

    def start(self, participant: FakeParticipant) -> None:
        video = rtc.VideoStream(participant.tracks[rtc.TrackKind.KIND_VIDEO])
        audio = rtc.AudioStream(participant.tracks[rtc.TrackKind.KIND_AUDIO],
                                sample_rate=RATE, num_channels=1)  # fmt: skip
        self.streams = [video, audio]
        self.tasks = [asyncio.create_task(self._video(video)),
                      asyncio.create_task(self._audio(audio))]  # fmt: skip

    async def _video(self, stream: rtc.VideoStream) -> None:
        async for ev in stream:
            y = np.frombuffer(ev.frame.data, np.uint8)
            self.video.append((ev.timestamp_us / 1e6, int(y[0]), y[SIZE - 1] > 128))

    async def _audio(self, stream: rtc.AudioStream) -> None:
        async for ev in stream:
            pcm = np.frombuffer(ev.frame.data, np.int16).copy()
            self.audio.append((asyncio.get_running_loop().time(), pcm))

    def sound(self) -> list[tuple[float, np.ndarray]]:
        """Each audio chunk with the time its first sample played: chunks come in a steady
        cadence, so each is timed by the least delayed of its neighbours (within 100 ms) and
        the audio between them (a busy loop reads them late, in bursts; the native side may
        drop some when it is read too late)."""
        ends = np.cumsum([len(pcm) for _, pcm in self.audio]) / RATE
        lag = np.array([t for t, _ in self.audio]) - ends
        near = [lag[max(i - 10, 0) : i + 11].min() for i in range(len(lag))]
        return [(base + end - len(pcm) / RATE, pcm)
                for base, end, (_, pcm) in zip(near, ends, self.audio, strict=True)]  # fmt: skip

    def onsets(self) -> list[float]:
        """Times at which sound starts after silence (to the sample)."""
        times, sounding = [], False
        for t, pcm in self.sound():
            loud = np.nonzero(np.abs(pcm) > LOUD)[0]
            if len(loud) and not sounding:
                times.append(t + loud[0] / RATE)
            sounding = len(loud) > 0 and loud[-1] > len(pcm) - 20
        return times

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for stream in self.streams:
            await stream.aclose()


@pytest.fixture(scope="module")
def backend() -> OrtBackend:
    return OrtBackend(WEIGHTS / "motion.onnx")


def make_engine(backend: OrtBackend, renderer: CodeRenderer | None = None) -> AvatarEngine:
    cfg = Config()
    engine_cfg = cfg.engine.model_copy(update={"idle_render_every": 1})  # every code distinct
    cfg = cfg.model_copy(update={"engine": engine_cfg})
    renderer = renderer or CodeRenderer()
    return build_engine(cfg, MonotonicClock(), renderer=renderer, backend=backend)


class Stage:
    """Our generator under LiveKit's runner, fed through ``QueueAudioOutput`` as an
    ``AgentSession`` feeds it (capture_frame, flush, clear_buffer)."""

    def __init__(self, backend: OrtBackend) -> None:
        self.renderer = CodeRenderer()
        self.engine = RecordingEngine(make_engine(backend, self.renderer))
        self.generator = AvatarVideoGenerator(cast(AvatarEngine, self.engine))
        self.tap = Tap(self.generator)
        self.output = QueueAudioOutput(sample_rate=RATE)
        self.room = FakeRoom()
        room = cast(rtc.Room, self.room)
        self.runner = AvatarRunner(room, audio_recv=self.output, video_gen=self.tap,
                                   options=self.generator.options)  # fmt: skip
        self.generator.attach(self.runner.av_sync)
        self.finished: list[PlaybackFinishedEvent] = []
        self.output.on("playback_finished", self.finished.append)
        self.read = Readback()

    async def __aenter__(self) -> Stage:
        await self.runner.start()
        await self.room.local_participant.published.wait()  # on the first (idle) frame
        self.read.start(self.room.local_participant)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.read.stop()
        await self.runner.aclose()
        await self.generator.aclose()

    async def say(self, audio: np.ndarray, rate: int) -> None:
        """A segment in 20 ms frames at once (text-to-speech runs ahead of playout)."""
        step = rate // 50
        for i in range(0, len(audio), step):
            await self.output.capture_frame(audio_frame(audio[i : i + step], rate))
        self.output.flush()

    def handed_audio(self, after: float = 0.0, before: float = np.inf) -> list[rtc.AudioFrame]:
        """The audio frames the runner took from the generator between two times."""
        handed = self.tap.handed
        return [x for t, x in handed if isinstance(x, rtc.AudioFrame) and after <= t < before]


async def sleep_until(condition: Any, timeout: float = 10.0, step: float = 0.02) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)


def bursts(rate: int) -> np.ndarray:
    """Three 200 ms tones, each after 200 ms of silence: onsets on frame boundaries."""
    n = rate // 5
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(n) / rate)
    return np.concatenate([np.zeros(n), tone] * 3).astype(np.float32)


def test_video_plays_with_its_audio_and_the_segment_ends_at_its_length(
    backend: OrtBackend,
) -> None:
    """Each tone's first frame comes out of the synchroniser with that audio (within one frame,
    over idle-then-speech and within speech), and playback_finished reports the segment's
    length within one frame (24 kHz in, resampled to 48 kHz). A run starved of CPU (see
    :func:`starved`) is run again, three times at most."""

    async def run() -> Stage:
        async with Stage(backend) as stage:
            await asyncio.sleep(0.5)
            await stage.say(bursts(24_000), 24_000)
            await sleep_until(lambda: stage.finished)
            await asyncio.sleep(0.3)
        return stage

    stage = next((s for s in (asyncio.run(run()) for _ in range(3)) if not starved(s)), None)
    assert stage is not None, "every run was starved of CPU: run this test on a quieter machine"
    [done] = stage.finished
    assert not done.interrupted
    assert abs(done.playback_position - 1.2) < FRAME_S, done.playback_position
    codes, onsets = onset_codes(stage.engine.frames), stage.read.onsets()
    assert len(codes) == len(onsets) == 3
    for code, t_audio in zip(codes, onsets, strict=True):
        shown = [t for t, c, _ in stage.read.video if c == code and abs(t - t_audio) < 0.5]
        assert len(shown) == 1
        assert abs(shown[0] - t_audio) < FRAME_S, (shown[0] - t_audio, code)
    ends = [i for i, (_, x) in enumerate(stage.tap.handed) if isinstance(x, AudioSegmentEnd)]
    last_audio = max(
        i for i, (_, x) in enumerate(stage.tap.handed) if isinstance(x, rtc.AudioFrame)
    )
    assert ends == [last_audio + 1]


def starved(stage: Stage) -> bool:
    """Whether a :func:`bursts` run lacked CPU (another process held it): the engine missed
    ticks, the runner took audio in bursts (LiveKit's synchroniser then keeps the backlog of
    audio queued behind the video), the audio ran dry between tones (onsets not 400 ms apart)
    or the synchroniser let video frames go irregularly."""
    onsets = stage.read.onsets()
    if stage.engine.stats.late or len(onsets) != 3:
        return True
    handed = np.array([t for t, x in stage.tap.handed if isinstance(x, rtc.AudioFrame)])
    times = np.array([t for t, _, _ in stage.read.video])
    shown = np.diff(times[(times > onsets[0] - 0.3) & (times < onsets[-1] + 0.3)])
    return bool(
        np.any(np.abs(np.diff(handed[:-1]) - FRAME_S) > 0.015)
        or np.any(np.abs(np.diff(onsets) - 0.4) > 0.005)
        or np.any(np.abs(shown - FRAME_S) > 0.015)
    )


def onset_codes(frames: list[VideoFrame]) -> list[int]:
    """The code (Y of the left half) of each engine frame whose audio starts a tone: the image
    that the engine made to go with that sound."""
    codes, sounding = [], False
    for frame in frames:
        assert frame.audio is not None and frame.i420 is not None
        pcm = np.abs(frame.audio.samples) * 32767
        if pcm[:50].max() > LOUD and not sounding:
            codes.append(int(frame.i420[0]))
        sounding = pcm[-50:].max() > LOUD
    return codes


def test_clear_buffer_interrupts_then_silence_and_the_next_segment_is_whole(
    backend: OrtBackend,
) -> None:
    """An interruption mid-segment: playback_finished(interrupted=True) at about what played;
    then no audio is handed on or heard, the avatar stops speaking; the next segment's
    position is its own length (nothing of the interrupted one is counted in it)."""
    speech = speak("The quick brown fox jumps over the lazy dog, and then it runs away.")
    lead_s = np.argmax(np.abs(speech.audio) * 32767 > LOUD) / speech.rate  # silence before it

    async def run() -> tuple[Stage, float, float, float]:
        async with Stage(backend) as stage:
            await asyncio.sleep(0.3)
            await stage.say(speech.audio, speech.rate)
            await sleep_until(lambda: stage.read.onsets())
            await asyncio.sleep(1.0)
            stage.renderer.hold()  # the interruption comes while a speech frame is drawn
            await sleep_until(stage.renderer.entered.is_set, step=0.002)
            cleared = asyncio.get_running_loop().time()
            stage.output.clear_buffer()  # what the agent session does on an interruption
            stage.output.flush()  # ... and then ends the segment
            await sleep_until(lambda: stage.finished)
            stage.renderer.release()
            await asyncio.sleep(1.0)
            resumed = asyncio.get_running_loop().time()
            await stage.say(bursts(RATE)[: RATE * 2 // 5], RATE)  # 400 ms
            await sleep_until(lambda: len(stage.finished) == 2)
            await asyncio.sleep(0.2)
        return stage, stage.read.onsets()[0], cleared, resumed

    stage, started, cleared, resumed = asyncio.run(run())
    first, second = stage.finished
    heard = cleared - started + lead_s  # the segment's audio that had played
    assert first.interrupted
    assert abs(first.playback_position - heard) < 0.1, (first, heard)
    assert stage.handed_audio(before=cleared) and not stage.handed_audio(cleared, resumed)
    quiet = [pcm for t, pcm in stage.read.sound() if cleared + 0.05 < t < cleared + 1.0]
    assert len(quiet) > 50 and max(np.abs(p).max() for p in quiet) == 0
    after = [speaking for t, _, speaking in stage.read.video if cleared + 0.2 < t < cleared + 1.0]
    assert after and not any(after)
    assert not second.interrupted
    assert abs(second.playback_position - 0.4) < FRAME_S, second.playback_position


def test_segments_queued_back_to_back_each_finish_at_their_own_length(
    backend: OrtBackend,
) -> None:
    """A second segment queued before the first has played (the sender runs ahead of real time)
    gets its own playback_finished at its own length: the runner counts a segment as started
    when it reads the segment's first frame, so the generator holds that read until the first
    segment's end is handed on."""
    speech = speak("Hello there. How are you today?")

    async def run() -> Stage:
        async with Stage(backend) as stage:
            await asyncio.sleep(0.3)
            await stage.say(speech.audio, speech.rate)
            await stage.say(bursts(RATE)[: RATE * 3 // 5], RATE)  # 600 ms
            await sleep_until(lambda: len(stage.finished) == 2)
        return stage

    first, second = asyncio.run(run()).finished
    assert not first.interrupted and not second.interrupted
    assert abs(first.playback_position - speech.duration_s) < FRAME_S, first
    assert abs(second.playback_position - 0.6) < FRAME_S, second


def test_idle_frames_and_no_audio_while_nothing_is_pushed(backend: OrtBackend) -> None:
    """With nothing pushed the avatar keeps showing (idle frames through the synchroniser), the
    runner gets no audio (no playback position counts up) and the track is silent."""

    async def run() -> Stage:
        async with Stage(backend) as stage:
            await asyncio.sleep(1.0)
        return stage

    stage = asyncio.run(run())
    assert len(stage.read.video) >= 5
    assert not any(speaking for _, _, speaking in stage.read.video)
    assert stage.handed_audio() == []
    assert stage.read.audio and max(np.abs(p).max() for _, p in stage.read.audio) == 0
    assert stage.generator.engine.stats.filled > 0 and stage.finished == []


def test_avatar_session_wires_the_agent_output_to_the_runner(backend: OrtBackend) -> None:
    """``AvatarSession.start`` (in process) sets the agent session's audio output, publishes the
    avatar's two tracks on the room and plays a segment to its end."""
    agent_session: Any = SimpleNamespace(output=SimpleNamespace(audio=None))  # what start uses

    async def run() -> tuple[AvatarSession, list[PlaybackFinishedEvent], FakeRoom]:
        room = FakeRoom()
        session = AvatarSession(engine=make_engine(backend))
        await session.start(agent_session, cast(rtc.Room, room))
        output = agent_session.output.audio
        finished: list[PlaybackFinishedEvent] = []
        output.on("playback_finished", finished.append)
        tone = bursts(RATE)[: RATE * 2 // 5]
        for i in range(0, len(tone), 960):
            await output.capture_frame(audio_frame(tone[i : i + 960]))
        output.flush()
        await sleep_until(lambda: finished)
        await session.aclose()
        return session, finished, room

    session, finished, room = asyncio.run(run())
    assert isinstance(agent_session.output.audio, QueueAudioOutput)
    assert set(room.local_participant.tracks) == {rtc.TrackKind.KIND_VIDEO,
                                                  rtc.TrackKind.KIND_AUDIO}  # fmt: skip
    assert abs(finished[0].playback_position - 0.4) < FRAME_S
    assert session.runner is None  # closed


def test_worker_token_joins_the_room_as_an_agent_on_the_agents_behalf() -> None:
    """The remote worker's token (checked with LiveKit's own verifier; no server used it)."""
    token = avatar_worker_token("room-1", "agent-1", "avatar-1", api_key="key", api_secret="s" * 32)
    claims = api.TokenVerifier("key", "s" * 32).verify(token)
    assert (claims.identity, claims.kind) == ("avatar-1", "agent")
    assert claims.video is not None and claims.video.room_join and claims.video.room == "room-1"
    assert claims.attributes == {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"}
