"""The Pipecat services in real Pipecat pipelines, fed festival speech as a TTS would feed them.

- A minute of speech through Pipecat's base output transport, read back (offline engine on a fake
  clock: as fast as the CPU goes): the Nth image leaves with the Nth frame of audio, to the sample.
- Real time through SmallWebRTC to an aiortc peer in this process: lip sync as received (arrival
  and RTP timestamps), bot speaking frames, an interruption, the engine closed by EndFrame.
- A remote ``avatar serve`` (in this process) through :class:`RemoteAvatarService`.

The renderer is a fake with the real protocol (a speaking block in its corner); the motion model,
the engine, Pipecat and aiortc are real. The engine's sync marker (a white square on frames whose
own audio is loud) ties each image to its sound wherever the frames are read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from pipecat.audio.utils import is_silence
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from avatar.audio.pcm import to_mono, to_pcm16
from avatar.clock import Clock, FakeClock, MonotonicClock
from avatar.compose.engines import build_engine
from avatar.compose.serve import make_server
from avatar.config import Config, load_config
from avatar.data.tts import Speech, speak
from avatar.engine.engine import AvatarEngine
from avatar.engine.render import MARKER_PX, MARKER_RMS
from avatar.frames import AudioChunk, MotionFrame
from avatar.integrations.pipecat import (
    AvatarVideoService,
    RemoteAvatarService,
    VideoClock,
    smallwebrtc_transport,
    transport_params,
)
from avatar.observe import Observer
from avatar.server.aiortc_hooks.receiver import shorten_audio_jitter_buffer
from avatar.tasks import cancel, spawn

SIZE, FPS, RATE = 64, 25, 24_000  # image side, engine fps, the pipeline's output rate
FRAME = RATE // FPS  # output samples per video frame
MS = 1_000_000
TEXT = (
    "Pipecat sends the words of the bot to the avatar, and the avatar sends back a face that "
    "says them. Every image leaves with the sound that goes with it. So the lips and the voice "
    "stay together for as long as the bot talks."
)


class StateRenderer:
    """A renderer (the real protocol) whose bottom-right block is white while the model speaks."""

    name, size = "state", SIZE

    def render(self, motion: MotionFrame) -> np.ndarray:
        image = np.full((SIZE, SIZE, 3), 90, np.uint8)
        image[-24:, -24:] = 255 if motion.is_speech else 0
        return image


def marked(rgb: np.ndarray) -> bool:
    """The engine's sync marker: this frame's own audio is loud."""
    return bool(rgb[2 : MARKER_PX - 2, 2 : MARKER_PX - 2].mean() > 200)


def speaking(rgb: np.ndarray) -> bool:
    return bool(rgb[-20:, -20:].mean() > 128)


def sounding(frame: Frame) -> bool:
    """Audio Pipecat's output transport counts as the bot speaking (not ``is_silence``)."""
    return isinstance(frame, SpeechOutputAudioRawFrame) and not is_silence(frame.audio)


def _rms(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float32) / 32768
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def loud(pcm: np.ndarray) -> bool:
    return _rms(pcm) > MARKER_RMS


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(overrides=["engine.sync_marker=true", f"render.size={SIZE}"])


@pytest.fixture(scope="module")
def speech() -> Speech:
    return speak(TEXT)  # about 16 s at 32 kHz


def tts_frames(audio: np.ndarray, rate: int, ms: int = 20) -> list[TTSAudioRawFrame]:
    """Audio as a TTS service pushes it: s16le mono in ``ms`` pieces."""
    n = rate * ms // 1000
    pcm = to_pcm16(audio)
    return [TTSAudioRawFrame(pcm[i : i + n].tobytes(), rate, 1) for i in range(0, len(pcm), n)]


class Recorder(FrameProcessor):
    """Records every frame that passes, in the order it is pushed (direct mode: no queue)."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(enable_direct_mode=True)
        self.clock = clock or MonotonicClock()
        self.frames: list[tuple[int, Frame, FrameDirection]] = []
        self.alive_at_end: list[str] | None = None  # the avatar's tasks as EndFrame went by

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append((self.clock.now_ns(), frame, direction))
        if isinstance(frame, EndFrame):
            self.alive_at_end = alive_tasks()
        await self.push_frame(frame, direction)

    def of(self, kind: type, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> list[Any]:
        return [f for _, f, d in self.frames if isinstance(f, kind) and d == direction]


class ReadBackOutput(BaseOutputTransport):
    """Pipecat's base output transport with a sound card that never waits: what it would send
    is what it pushes on, in order (images, audio chunks, the frames between)."""

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: Any) -> bool:
        return True

    async def write_video_frame(self, frame: Any) -> bool:
        return True


def played(frames: Iterable[Frame]) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
    """A transport's output: each image with the audio sample it showed at, and the audio."""
    images: list[tuple[int, np.ndarray]] = []
    audio: list[np.ndarray] = []
    at = 0
    for f in frames:
        if isinstance(f, OutputImageRawFrame):
            images.append((at, np.frombuffer(f.image, np.uint8).reshape(SIZE, SIZE, 3)))
        elif isinstance(f, SpeechOutputAudioRawFrame):
            audio.append(np.frombuffer(f.audio, "<i2"))
            at += len(audio[-1])
    return images, np.concatenate(audio) if audio else np.zeros(0, np.int16)


def alive_tasks(
    prefixes: tuple[str, ...] = ("engine-", "pipecat-avatar", "pipecat-remote"),
) -> list[str]:
    names = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    return [n for n in names if n.startswith(prefixes)]


# -- a minute of speech, read back from Pipecat's base output transport -----------------------


def test_a_minute_of_speech_leaves_the_transport_image_first_and_in_step(
    cfg: Config, speech: Speech
) -> None:
    audio = np.tile(speech.audio, 5)  # 66 s
    engines: list[AvatarEngine] = []

    def offline() -> AvatarEngine:  # every frame rendered, time jumps: as fast as the CPU goes
        engines.append(build_engine(cfg, FakeClock(), realtime=False, renderer=StateRenderer()))
        return engines[-1]

    out = Recorder()
    text = TTSTextFrame("bye", text_type="sentence")
    frames = [TTSStartedFrame(), *tts_frames(audio, speech.rate), text, TTSStoppedFrame()]
    params = transport_params(cfg, audio_out_sample_rate=RATE)
    pipeline = Pipeline([AvatarVideoService(engine=offline), ReadBackOutput(params), out])

    async def run() -> list[str]:
        await run_test(pipeline, frames_to_send=frames, start_timeout=30,
                       pipeline_params=PipelineParams(audio_out_sample_rate=RATE))  # fmt: skip
        return alive_tasks()

    left = asyncio.run(run())
    images, sound = played(f for _, f, d in out.frames if d == FrameDirection.DOWNSTREAM)
    n_speech = len(audio) * RATE // speech.rate
    assert len(audio) / speech.rate > 60 and len(sound) >= n_speech
    # the Nth image shows as the Nth frame of audio starts, to the sample, all minute long
    assert [at for at, _ in images] == [i * FRAME for i in range(len(images))]
    assert len(images) == -(-len(sound) // FRAME)
    # and it is that audio's image: marked where that frame's audio is loud
    marks = np.array([marked(img) for _, img in images])
    louds = np.array([loud(sound[at : at + FRAME]) for at, _ in images])
    assert marks.sum() > 500
    for lag in (-1, 1):  # one frame off is visibly worse: the check can see a one-frame error
        assert np.mean(np.roll(marks, lag) == louds) < np.mean(marks == louds) - 0.05
    first, last = slice(0, 250), slice(len(images) - 300, len(images) - 50)
    print(f"marks match loudness: {np.mean(marks[first] == louds[first]):.3f} (first 10 s), "
          f"{np.mean(marks[last] == louds[last]):.3f} (last 10 s)")  # fmt: skip
    assert np.mean(marks[first] == louds[first]) > 0.97
    assert np.mean(marks[last] == louds[last]) > 0.97  # no drift by the end
    # the audio is the speech, in place: per-frame loudness follows the input's
    env_in = _envelope(audio, speech.rate // FPS)
    env_out = _envelope(sound[:n_speech], FRAME)[: len(env_in)]
    assert np.corrcoef(env_in[: len(env_out)], env_out)[0, 1] > 0.98
    # the TTS's text and stop frames leave after the speech they followed, not before
    order = [f for _, f, d in out.frames if d == FrameDirection.DOWNSTREAM]
    last_loud = max(i for i, f in enumerate(order) if isinstance(f, SpeechOutputAudioRawFrame)
                    and loud(np.frombuffer(f.audio, "<i2")))  # fmt: skip
    stop = next(i for i, f in enumerate(order) if isinstance(f, TTSStoppedFrame))
    assert last_loud < order.index(text) < stop
    # EndFrame played the speech out, then closed the engine: nothing of it is left running
    assert out.alive_at_end == [] and left == []
    with pytest.raises(RuntimeError):
        engines[0].push_audio(AudioChunk(np.zeros(960, np.float32), 48000))


def _envelope(pcm: np.ndarray, n: int) -> np.ndarray:
    x = pcm.astype(np.float32)
    x = x / (np.abs(x).max() or 1)
    k = len(x) // n
    return np.sqrt((x[: k * n].reshape(k, n) ** 2).mean(axis=1))


# -- real time: SmallWebRTC to an aiortc peer ---------------------------------------------------


class Peer:
    """An aiortc client of Pipecat's SmallWebRTC (as the browser client would be): records the
    bot's video (arrival, RTP pts, marker, speaking) and audio (arrival, pts, s16 mono)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pc = RTCPeerConnection()
        self.video: list[tuple[int, int, bool, bool]] = []
        self.audio: list[tuple[int, int, np.ndarray]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def offer(self) -> RTCSessionDescription:
        self.pc.addTransceiver("audio", direction="sendrecv")
        self.pc.addTransceiver("video", direction="sendrecv")
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            shorten_audio_jitter_buffer(self.pc, track, 0)  # no 80 ms hold before decoding
        self._tasks.append(spawn(self._read(track), f"peer-{track.kind}"))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = self.clock.now_ns()
                if track.kind == "video":
                    rgb = frame.to_ndarray(format="rgb24")  # type: ignore[union-attr]
                    self.video.append((now, int(frame.pts or 0), marked(rgb), speaking(rgb)))
                else:
                    pcm = np.round(to_mono(frame) * 32768).astype(np.int16)  # type: ignore[arg-type]
                    self.audio.append((now, int(frame.pts or 0), pcm))

    async def close(self) -> None:
        await cancel(*self._tasks)
        await self.pc.close()


def av_offset_ms(
    video: list[tuple[float, bool]], audio: list[tuple[float, np.ndarray]]
) -> tuple[float, float]:
    """Video time minus audio time of the same content (ms): the shift of the audio timeline
    that best matches each frame's marker to the loudness of the 40 ms of audio at its time,
    and how many frames match there. Times are seconds; audio pieces play at 48 kHz."""
    t0 = audio[0][0]
    pcm = np.concatenate([p for _, p in audio])
    starts = np.array([t for t, _ in audio])
    sizes = np.cumsum([0] + [len(p) for _, p in audio])

    def rms_at(t: float) -> float:
        i = max(int(np.searchsorted(starts, t, side="right")) - 1, 0)
        at = sizes[i] + round((t - starts[i]) * 48000)
        x = pcm[at : at + 1920].astype(np.float32) / 32768
        return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0

    def match(lag: int) -> float:  # on frames whose sound is clearly loud or quiet (Opus
        pairs = [(m, rms_at(t + lag / 1000)) for t, m in video if t + lag / 1000 > t0]
        sure = [(m, r > MARKER_RMS) for m, r in pairs if not 0.6 < r / MARKER_RMS < 1.6]
        return float(np.mean([m == is_loud for m, is_loud in sure]))  # moves levels a little)

    best = max(range(-120, 125, 5), key=match)
    return -float(best), match(best)


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[PipelineWorker]:
    """A pipeline worker running (with a WorkerRunner) until the block ends and it has ended."""
    worker = PipelineWorker(pipeline, cancel_on_idle_timeout=False,
                            params=PipelineParams(audio_out_sample_rate=RATE))  # fmt: skip
    started = asyncio.Event()
    worker.add_event_handler("on_pipeline_started", lambda *_: started.set())
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = spawn(runner.run(), "pipecat-runner")
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield worker
    finally:
        await asyncio.wait_for(run, 30)


async def wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def smallwebrtc_session(cfg: Config, speech: Speech) -> dict[str, Any]:
    """Two utterances through SmallWebRTC: the first played out, the second interrupted."""
    clock = MonotonicClock()
    peer = Peer(clock)
    connection = SmallWebRTCConnection()
    offer = await peer.offer()
    await connection.initialize(sdp=offer.sdp, type=offer.type)
    answer = connection.get_answer()
    await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    transport = smallwebrtc_transport(connection, cfg, clock)
    service = AvatarVideoService(
        engine=lambda: build_engine(cfg, clock, realtime=True, renderer=StateRenderer())
    )
    head, tail = Recorder(clock), Recorder(clock)
    first = speech.audio[: round(4.3 * speech.rate)]  # the first sentence and its pause
    second = speech.audio[round(4.3 * speech.rate) :]
    out: dict[str, Any] = {"peer": peer, "head": head, "tail": tail, "service": service}
    async with running(Pipeline([head, service, transport.output(), tail])) as worker:
        await wait_for(lambda: len(peer.video) > 10 and len(peer.audio) > 10, 20)
        after = TTSTextFrame("after the first turn", text_type="sentence")
        out["after"] = after
        for frame in [TTSStartedFrame(), *tts_frames(first, speech.rate), TTSStoppedFrame(), after]:
            await worker.queue_frame(frame)
        stopped = lambda n: lambda: len(tail.of(BotStoppedSpeakingFrame)) >= n  # noqa: E731
        await wait_for(stopped(1), 15)
        for frame in [TTSStartedFrame(), *tts_frames(second, speech.rate)]:
            await worker.queue_frame(frame)
        await wait_for(lambda: len(tail.of(BotStartedSpeakingFrame)) >= 2, 10)
        await asyncio.sleep(1.5)
        await wait_for(lambda: loud(peer.audio[-1][2]) and peer.video[-1][3], 3)  # mid-word
        out["interrupted_ns"] = clock.now_ns()
        await worker.queue_frame(InterruptionFrame())
        await asyncio.sleep(1.0)
        out["sent_before_end"] = len(tail.frames)
        await worker.queue_frame(EndFrame())
    out["left"] = alive_tasks()
    await peer.close()
    return out


@pytest.fixture(scope="module")
def webrtc(cfg: Config, speech: Speech) -> dict[str, Any]:
    return asyncio.run(smallwebrtc_session(cfg, speech))


def test_smallwebrtc_peer_receives_lips_and_voice_together(webrtc: dict[str, Any]) -> None:
    peer: Peer = webrtc["peer"]
    video = [(a / 1e9, m) for a, _, m, _ in peer.video]
    audio = [(a / 1e9 - len(p) / 48000, p) for a, _, p in peer.audio]  # a packet starts earlier
    assert sum(m for _, m in video) > 30  # speech was marked
    arrival = av_offset_ms(video, audio)
    # RTP: each track's timestamps from its first packet (as a receiver's lip sync maps them)
    a0, p0 = peer.video[0][0] / 1e9, peer.video[0][1]
    by_pts = [(a0 + (p - p0) / 90000, m) for _, p, m, _ in peer.video]
    b0, q0 = peer.audio[0][0] / 1e9 - 0.02, peer.audio[0][1]
    audio_pts = [(b0 + (q - q0) / 48000, p) for _, q, p in peer.audio]
    rtp = av_offset_ms(by_pts, audio_pts)
    print(f"A/V offset at the peer: {arrival} by arrival, {rtp} by RTP time (ms, matched)")
    assert abs(arrival[0]) <= 40 and abs(rtp[0]) <= 40  # within one frame
    assert arrival[1] > 0.9 and rtp[1] > 0.9  # and the frames match their sound there
    # the video clock keeps time: its RTP timestamps follow the frames' arrival (aiortc's fixed
    # 1/30 s stamps fell 0.17 s behind per second at 25 fps)
    span_pts = (peer.video[-1][1] - p0) / 90000
    span = (peer.video[-1][0] - peer.video[0][0]) / 1e9
    assert span > 8 and abs(span_pts - span) < 0.04
    assert abs(len(peer.video) / span - FPS) < 1  # each image sent once, none left out


def test_smallwebrtc_interruption_goes_silent_and_idle_within_two_frames(
    webrtc: dict[str, Any],
) -> None:
    tail: Recorder = webrtc["tail"]
    sent = [
        f for _, f, d in tail.frames[: webrtc["sent_before_end"]] if d == FrameDirection.DOWNSTREAM
    ]
    cut = next(i for i, f in enumerate(sent) if isinstance(f, InterruptionFrame))
    images, sound = played(sent[cut:])
    frame = RATE // FPS
    assert any(speaking(img) for _, img in played(sent[:cut])[0][-5:])  # it was talking
    louds = [i for i in range(0, len(sound), frame) if loud(sound[i : i + frame])]
    talks = [i for i, (_, img) in enumerate(images) if speaking(img)]
    print(f"the transport sent {len(louds)} loud frames of audio, {len(talks)} speaking images "
          "after the interruption")  # fmt: skip
    assert max(louds, default=-1) < 2 * frame  # silent within 2 frames, as the transport sends
    assert not any(speaking(img) for _, img in images[2:])  # and the idle face
    assert len(images) > 15  # the idle face kept coming at the engine's rate
    # at the peer: the last loud audio and the last speaking image arrive within 2 frames
    peer: Peer = webrtc["peer"]
    t = webrtc["interrupted_ns"]
    last_loud = max(a for a, _, p in peer.audio if loud(p))
    last_talk = max(a for a, _, _, s in peer.video if s)
    print(f"after the interruption: audio silent {(last_loud - t) / MS:.0f} ms, "
          f"idle face {(last_talk - t) / MS:.0f} ms")  # fmt: skip
    assert last_loud - t <= 100 * MS and last_talk - t <= 100 * MS  # + a 20 ms packet


def test_smallwebrtc_bot_speaking_frames_come_from_the_transport_once_per_turn(
    webrtc: dict[str, Any],
) -> None:
    head, tail = webrtc["head"], webrtc["tail"]
    kinds = (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)
    down = [
        type(f)
        for _, f, d in tail.frames
        if isinstance(f, kinds) and d == FrameDirection.DOWNSTREAM
    ]
    up = [
        type(f)
        for f in head.of(kinds[0], FrameDirection.UPSTREAM)
        + head.of(kinds[1], FrameDirection.UPSTREAM)
    ]
    assert down == [BotStartedSpeakingFrame, BotStoppedSpeakingFrame] * 2  # no doubles
    assert sorted(map(str, up)) == sorted(map(str, down))  # upstream too, through the service
    # started as its first sound went out; stopped after 0.35 s of silence after the first turn
    sent = [(t, f) for t, f, d in tail.frames if d == FrameDirection.DOWNSTREAM]
    start = next(i for i, (_, f) in enumerate(sent) if isinstance(f, BotStartedSpeakingFrame))
    first_sound = next(i for i, (_, f) in enumerate(sent) if sounding(f))
    assert start < first_sound < start + 4  # right before it (an image may come between)
    stop = next(t for t, f in sent if isinstance(f, BotStoppedSpeakingFrame))
    last_sound = max(t for t, f in sent if t < stop and sounding(f))
    assert 300 * MS < stop - last_sound < 700 * MS
    # the TTS's stop frame left when its speech had played out (its last frame let out)
    tts_stop = next(t for t, f in sent if isinstance(f, TTSStoppedFrame))
    assert last_sound < tts_stop < stop
    after = next(t for t, f in sent if f is webrtc["after"])  # and what came after it, next
    assert tts_stop <= after < stop


def test_smallwebrtc_end_frame_closes_the_engine(webrtc: dict[str, Any]) -> None:
    assert webrtc["tail"].alive_at_end == [] and webrtc["left"] == []
    engine = webrtc["service"].engine
    with pytest.raises(RuntimeError):
        engine.push_audio(AudioChunk(np.zeros(960, np.float32), 48000))


# -- the pieces on their own --------------------------------------------------------------------


def test_video_clock_stamps_each_frame_with_its_send_time() -> None:
    class Track:
        readyState = "live"

    clock = FakeClock(5 * 10**9)
    stamps = VideoClock(Track(), clock)

    async def run() -> list[tuple[int, Fraction]]:
        out = []
        for dt in [0, 40, 40, 40, 200, 0]:  # 25 fps, a 200 ms stall, two in one instant
            clock.advance(dt * MS)
            out.append(await stamps.next_timestamp())
        return out

    got = asyncio.run(run())
    assert [s for s, _ in got] == [0, 3600, 7200, 10800, 28800, 28801]
    assert got[0][1] == Fraction(1, 90000)


def test_transport_params_fit_the_avatar(cfg: Config) -> None:
    assert transport_params(cfg, 4).video_out_framerate == 100  # SmallWebRTC checks 4x a frame
    p25 = transport_params(cfg)
    assert (p25.video_out_width, p25.video_out_height, p25.video_out_framerate) == (SIZE, SIZE, 25)
    assert p25.audio_out_10ms_chunks == 4 and not p25.video_out_is_live
    at30 = cfg.model_copy(update={"motion": cfg.motion.model_copy(update={"fps": 30})})
    assert transport_params(at30).audio_out_10ms_chunks == 1  # 33.3 ms: 10 ms chunks tile it
    assert transport_params(cfg, audio_out_10ms_chunks=2).audio_out_10ms_chunks == 2


# -- a remote `avatar serve` --------------------------------------------------------------------


def fake_engines(cfg: Config) -> Callable[[Clock, Executor], Any]:
    def engines(clock: Clock, executor: Executor) -> Any:
        def build(avatar: str, live: bool, observer: Observer) -> AvatarEngine:
            return build_engine(cfg, clock, live=live, executor=executor, observer=observer,
                                renderer=StateRenderer())  # fmt: skip

        return build

    return engines


async def remote_session(cfg: Config, speech: Speech) -> dict[str, Any]:
    cfg = cfg.model_copy(
        update={"server": cfg.server.model_copy(update={"ice_hosts": ["127.0.0.1"]})}
    )
    server = make_server(cfg, engines=fake_engines(cfg), renders=False)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    tail = Recorder()
    service = RemoteAvatarService(url)
    first = speech.audio[: round(4.3 * speech.rate)]
    out: dict[str, Any] = {"tail": tail}
    try:
        async with running(Pipeline([service, ReadBackOutput(transport_params(cfg)), tail])) as w:
            await wait_for(lambda: len(tail.of(OutputImageRawFrame)) > 10, 20)
            for frame in [TTSStartedFrame(), *tts_frames(first, speech.rate), TTSStoppedFrame()]:
                await w.queue_frame(frame)
            await wait_for(lambda: len(tail.of(BotStoppedSpeakingFrame)) >= 1, 15)
            for frame in tts_frames(speech.audio[len(first) :], speech.rate):
                await w.queue_frame(frame)
            await wait_for(lambda: len(tail.of(BotStartedSpeakingFrame)) >= 2, 10)
            await asyncio.sleep(1.0)
            await w.queue_frame(InterruptionFrame())
            await asyncio.sleep(0.8)
            out["sessions_open"] = len(server.sessions)
            await w.queue_frame(EndFrame())
        out["left"] = alive_tasks()
        await asyncio.sleep(0.5)
        out["sessions_after"] = len(server.sessions)
    finally:
        await runner.cleanup()
        server.executor.shutdown(wait=False, cancel_futures=True)
    return out


def test_remote_avatar_serve_session_through_pipecat(cfg: Config, speech: Speech) -> None:
    r = asyncio.run(remote_session(cfg, speech))
    tail: Recorder = r["tail"]
    sent = [f for _, f, d in tail.frames if d == FrameDirection.DOWNSTREAM]
    images, sound = played(sent)
    marks = np.array([marked(img) for _, img in images])
    frame = RATE // FPS
    assert marks.sum() > 30

    def match(lag: int) -> float:  # frames whose sound is clearly loud or quiet, as above
        rms = [_rms(sound[max(at + lag, 0) : at + lag + frame]) for at, _ in images]
        sure = [(m, r > MARKER_RMS) for m, r in zip(marks, rms, strict=True)
                if not 0.6 < r / MARKER_RMS < 1.6]  # fmt: skip
        return float(np.mean([m == is_loud for m, is_loud in sure]))

    by_lag = {lag: match(lag) for lag in range(-2 * frame, 2 * frame + 1, frame // 4)}
    best = max(by_lag, key=lambda k: by_lag[k])
    print(f"remote A/V offset (transport order): {-best * 1000 / RATE:+.0f} ms, "
          f"{by_lag[best]:.2f} of the frames matched")  # fmt: skip
    assert by_lag[best] > 0.9
    assert -40 <= -best * 1000 / RATE <= 20  # within a frame, the image rather first
    cut = next(i for i, f in enumerate(sent) if isinstance(f, InterruptionFrame))
    after = played(sent[cut:])[1]
    louds = [i for i in range(0, len(after), frame) if loud(after[i : i + frame])]
    print(
        f"remote: loud for {(max(louds, default=-frame) + frame) * 1000 / RATE:.0f} ms after clear"
    )
    assert max(louds, default=-1) < 10 * frame  # the server stopped (a round trip, its queues)
    assert r["sessions_open"] == 1 and r["sessions_after"] == 0 and r["left"] == []
