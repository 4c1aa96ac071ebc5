"""The engine as the avatar side of LiveKit Agents' avatar protocol (``avatar[livekit]``).

LiveKit's :class:`~livekit.agents.voice.avatar.AvatarRunner` is handed a room, an audio receiver and
a video generator; this module gives it the generator, :class:`AvatarVideoGenerator`, over one
:class:`~avatar.engine.engine.AvatarEngine`, and composes the two ways LiveKit runs an avatar:

- **in process** (:class:`AvatarSession`, as the bitHuman plugin's local mode): the agent's audio
  goes into a :class:`~livekit.agents.voice.avatar.QueueAudioOutput`, which is the runner's
  receiver; the runner publishes the avatar's tracks as the agent's own participant;
- **remote worker** (:func:`serve_avatar` on the worker, :func:`remote_audio_output` and
  :func:`avatar_worker_token` on the agent): the agent streams its audio over a byte stream (topic
  ``lk.audio_stream``) to a worker that joined the room, whose
  :class:`~livekit.agents.voice.avatar.DataStreamAudioReceiver` answers the ``lk.clear_buffer`` and
  ``lk.playback_finished`` RPCs.

What the generator hands the runner, per engine frame: the image as an ``rtc.VideoFrame``, then
the frame's share of the agent's audio as ``rtc.AudioFrame``\\ s, then, where a segment's last
sample went out, ``AudioSegmentEnd``. The runner counts every ``AudioFrame`` into the segment's
playback position, so idle frames, the silence that flushes a segment's end through the motion
model, and frames from before an interruption go out as video only.

Tested here (tests/agents/test_livekit.py): the generator and the real ``AvatarRunner``,
``QueueAudioOutput`` and ``AVSynchronizer`` with local tracks read back, on a fake room that
publishes nothing. Not tested here (no LiveKit server runs on these machines): joining a room,
publishing to an SFU, byte streams and RPCs between participants, :func:`serve_avatar` and
:func:`remote_audio_output` against a real agent.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from livekit import api, rtc
from livekit.agents import get_job_context
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    DataStreamAudioOutput,
    DataStreamAudioReceiver,
    QueueAudioOutput,
    VideoGenerator,
)

from avatar.audio.pcm import from_pcm16, to_pcm16
from avatar.audio.resample import MonoStream, mono_stream
from avatar.clock import Clock, MonotonicClock
from avatar.compose.engines import build_engine
from avatar.config import Config, load_config
from avatar.engine.engine import AvatarEngine
from avatar.frames import AudioChunk, VideoFrame, frame_span
from avatar.tasks import within
from avatar.units import OUTPUT_RATE

if TYPE_CHECKING:
    from livekit.agents import AgentSession

Item: TypeAlias = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd
CLEAR_WAIT_S = 0.5  # at most this long an interruption waits for the runner's frame in hand


# -- conversions ---------------------------------------------------------------------------


def video_frame(frame: VideoFrame) -> rtc.VideoFrame:
    """The engine frame's image for a ``rtc.VideoSource``: its I420 planes when the engine made
    them (a real-time engine does), else the RGB image."""
    height, width = frame.image.shape[:2]
    if frame.i420 is not None:
        return rtc.VideoFrame(width, height, rtc.VideoBufferType.I420, frame.i420.tobytes())
    rgb = np.ascontiguousarray(frame.image)
    return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, rgb.tobytes())


def audio_frame(samples: np.ndarray, rate: int = OUTPUT_RATE) -> rtc.AudioFrame:
    """Mono float32 samples as a 16-bit ``rtc.AudioFrame``."""
    pcm = to_pcm16(samples)
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))


def mono_samples(frame: rtc.AudioFrame) -> np.ndarray:
    """An ``rtc.AudioFrame`` (16-bit, interleaved) as mono float32 (channels averaged)."""
    pcm = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels)
    return from_pcm16(pcm.mean(axis=1) if frame.num_channels > 1 else pcm[:, 0])


# -- where each segment's audio lies on the engine's timeline -------------------------------


@dataclass(slots=True)
class _Piece:
    samples: int  # output-rate samples
    plays: bool  # the agent's audio (True) or the silence that flushes a segment's end
    ends_segment: bool = False  # an AudioSegmentEnd follows this piece


class SegmentTimeline:
    """What the generator pushed since the last interruption, in output samples, as the engine
    lays it end to end: the agent's audio, the ends of its segments, and the silence pushed after
    each end. :meth:`take` maps an engine frame's audio back onto it.

    The engine starts its timeline, and starts it again after an interruption, at a frame
    boundary, so the first frame taken after one marks where this timeline starts."""

    def __init__(self, rate: int, fps: float) -> None:
        self.rate, self.fps = rate, fps
        self.pushed = 0  # samples pushed
        self._pieces: deque[_Piece] = deque()
        self._start: int | None = None  # engine timeline sample of this timeline's sample 0
        self._taken = 0  # samples handed out (or passed over)

    def add_audio(self, n: int) -> None:
        last = self._pieces[-1] if self._pieces else None
        if last is not None and last.plays and not last.ends_segment:
            last.samples += n
        else:
            self._pieces.append(_Piece(n, True))
        self.pushed += n

    def end_segment(self, pad: int) -> None:
        """The segment ends after the audio pushed so far; ``pad`` samples of silence follow."""
        last = self._pieces[-1] if self._pieces else None
        if last is None or not last.plays:
            self._pieces.append(_Piece(0, True, ends_segment=True))
        else:
            last.ends_segment = True
        if pad:
            self._pieces.append(_Piece(pad, False))
        self.pushed += pad

    def to_boundary(self) -> int:
        """Samples from the end of what was pushed to the next frame boundary (frames of
        ``rate / fps`` samples: exact when that is a whole number, as at 25 or 30 fps)."""
        k = math.floor(self.pushed * self.fps / self.rate)
        while frame_span(k, self.rate, self.fps)[0] < self.pushed:
            k += 1
        return frame_span(k, self.rate, self.fps)[0] - self.pushed

    def take(self, start: int, samples: np.ndarray) -> list[np.ndarray | AudioSegmentEnd]:
        """An engine frame whose audio ``samples`` begin at timeline sample ``start``: the parts
        of it that play and the segment ends among them, in order. Frames the engine dropped
        (a gap before ``start``) are passed over; their segment ends still come out."""
        if self._start is None:
            self._start = start
        out: list[np.ndarray | AudioSegmentEnd] = []
        offset = start - self._start - self._taken
        if offset > 0:
            self._consume(offset, None, out)
        elif offset < 0:
            samples = samples[-offset:]
        self._consume(len(samples), samples, out)
        return out

    def _consume(
        self, n: int, samples: np.ndarray | None, out: list[np.ndarray | AudioSegmentEnd]
    ) -> None:
        i = 0
        while self._pieces and (i < n or self._pieces[0].samples == 0):
            piece = self._pieces[0]
            k = min(piece.samples, n - i)
            if piece.plays and samples is not None and k:
                out.append(samples[i : i + k])
            piece.samples -= k
            i += k
            if piece.samples == 0:
                self._pieces.popleft()
                if piece.ends_segment:
                    out.append(AudioSegmentEnd())
        self._taken += n


# -- the generator -------------------------------------------------------------------------


class AvatarVideoGenerator(VideoGenerator):
    """LiveKit's ``VideoGenerator`` over one engine; see the module docstring.

    ``push_audio`` takes the agent's audio at any rate and channel count (resampled here to
    the output rate, so the engine's timeline and the segment ends agree to the sample) and waits
    while more than ``max_pending_s`` of it is not yet out as frames. ``AudioSegmentEnd`` pushes
    the silence that carries the segment's last frame through the motion model; the
    ``AudioSegmentEnd`` comes out right after that frame's audio. An interruption
    (:meth:`clear_buffer`) drops what is queued; frames already made from the older audio go out
    as video only (told apart by when their audio was pushed, on the engine's clock).

    Known limits (none of which a test here can provoke): a frame the engine drops because the
    runner did not take it in time (it stalls only while publishing) loses its audio; if that is
    the first frame after an interruption, the following segment's end moves by a frame; a motion
    model fault mid-segment (the engine drops that block) moves it by up to the block.
    """

    def __init__(self, engine: AvatarEngine, *, max_pending_s: float = 1.0) -> None:
        self.engine, self.max_pending_s = engine, max_pending_s
        self._timeline = SegmentTimeline(OUTPUT_RATE, engine.fps)
        self._resampler: MonoStream | None = None
        self._resampler_rate = 0
        self._segment_samples = 0  # audio in the open segment
        self._cleared_ns: int | None = None  # engine clock at the last interruption
        self._pending: deque[Item] = deque()  # the current frame's items not yet handed out
        self._free = asyncio.Event()  # the runner holds no item of ours (it is back for more)
        self._free.set()
        self._ended = asyncio.Event()  # the open segment's end was handed on (or cleared)
        self._frames: AvatarEngine | None = None
        self._av_sync: rtc.AVSynchronizer | None = None

    @property
    def options(self) -> AvatarOptions:
        """The runner's options: the renderer's square size, the engine's rate, mono audio."""
        size = self.engine.renderer.size
        return AvatarOptions(video_width=size, video_height=size, video_fps=self.engine.fps,
                             audio_sample_rate=OUTPUT_RATE, audio_channels=1)  # fmt: skip

    def attach(self, av_sync: rtc.AVSynchronizer) -> None:
        """The runner's synchroniser, whose queues an interruption empties too (the runner
        itself leaves up to its queue of the older speech to play)."""
        self._av_sync = av_sync

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """The agent's audio, or the end of its current segment. An end returns once it has
        been handed on: the runner takes a segment as started when it reads the segment's first
        frame, so a next segment read before this end would go unreported."""
        if isinstance(frame, AudioSegmentEnd):
            if self._end_segment():
                await self._ended.wait()
            return
        self._push(self._resample(mono_samples(frame), frame.sample_rate))
        await self.engine.wait_for_room(self.max_pending_s)

    async def clear_buffer(self) -> None:
        """Interruption: the engine drops what is queued and the segment is over. Returns once
        the runner holds no frame of the older audio (at most :data:`CLEAR_WAIT_S`), so the
        playback position it then reports is the audio it handed on."""
        self.engine.clear_buffer()
        self._cleared_ns = self.engine.clock.now_ns()
        self._timeline = SegmentTimeline(OUTPUT_RATE, self.engine.fps)
        self._resampler, self._segment_samples = None, 0
        self._pending.clear()
        self._ended.set()
        if not self._free.is_set():
            await within(self.engine.clock, CLEAR_WAIT_S, self._free.wait())
        if self._av_sync is not None:
            await self._av_sync.clear_queue()

    def __aiter__(self) -> AvatarVideoGenerator:
        return self

    async def __anext__(self) -> Item:
        if self._frames is None:
            self._frames = aiter(self.engine)  # starts the engine's tasks
        self._free.set()
        while not self._pending:
            self._pending.extend(self._items(await anext(self._frames)))
        self._free.clear()
        item = self._pending.popleft()
        if isinstance(item, AudioSegmentEnd):
            self._ended.set()
        return item

    async def aclose(self) -> None:
        await self.engine.aclose()

    def _items(self, frame: VideoFrame) -> list[Item]:
        """One engine frame as the runner's items (see the module docstring)."""
        items: list[Item] = [video_frame(frame)]
        timing = frame.timing
        if frame.audio is None or timing is None or timing.source_index < 0:
            return items  # idle: no audio behind it
        if self._cleared_ns is not None and timing.audio_in_ns < self._cleared_ns:
            return items  # made from audio pushed before the interruption
        start = frame_span(timing.source_index, OUTPUT_RATE, self.engine.fps)[0]
        for part in self._timeline.take(start, frame.audio.samples):
            items.append(part if isinstance(part, AudioSegmentEnd) else audio_frame(part))
        return items

    def _push(self, samples: np.ndarray) -> None:
        if len(samples):
            self.engine.push_audio(AudioChunk(samples, OUTPUT_RATE))
            self._timeline.add_audio(len(samples))
            self._segment_samples += len(samples)

    def _end_segment(self) -> bool:
        """Close the segment: the resampler's tail, then silence up to the next frame boundary
        and the motion model's delay. A segment with no audio (its audio was cleared: LiveKit's
        receivers still send its end) ends nothing (False): the runner already reported it."""
        if self._resampler is not None:
            self._push(self._resampler.flush())
            self._resampler = None
        if self._segment_samples == 0:
            return False
        self._ended.clear()
        pad = self._timeline.to_boundary() + self.engine.motion.delay
        self._timeline.end_segment(pad)
        if pad:
            self.engine.push_audio(AudioChunk(np.zeros(pad, np.float32), OUTPUT_RATE))
        self._segment_samples = 0
        return True

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate == OUTPUT_RATE:
            return samples
        if self._resampler is None or rate != self._resampler_rate:
            tail = self._resampler.flush() if self._resampler is not None else samples[:0]
            self._resampler, self._resampler_rate = mono_stream(OUTPUT_RATE, rate), rate
            return np.concatenate([tail, self._resampler.push(samples)])
        return self._resampler.push(samples)


# -- in process: the bitHuman plugin's local mode, with our engine -------------------------


async def load_engine(cfg: Config | None = None, clock: Clock | None = None) -> AvatarEngine:
    """A real-time engine for buffered input (agent audio arrives ahead of playout), built in
    the loop's executor (it loads the models)."""
    loop = asyncio.get_running_loop()
    build = partial(build_engine, cfg or load_config(), clock or MonotonicClock())
    return await loop.run_in_executor(None, build)


class AvatarSession:
    """The avatar in the agent's own process: ``await AvatarSession().start(session, room)``
    before ``session.start(...)``. The avatar's tracks are published as the agent's participant
    on its first frame; ``session.output.audio`` becomes the avatar's audio input.

    Composed from LiveKit's own parts (``QueueAudioOutput`` -> ``AvatarRunner`` with
    :class:`AvatarVideoGenerator`); in a job it closes at the job's shutdown. Tested here on a
    fake room and a stand-in for the agent session; not with a real ``AgentSession`` or room.
    """

    def __init__(self, cfg: Config | None = None, *, engine: AvatarEngine | None = None) -> None:
        self.cfg, self.engine = cfg, engine
        self.generator: AvatarVideoGenerator | None = None
        self.audio: QueueAudioOutput | None = None
        self.runner: AvatarRunner | None = None

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        engine = self.engine or await load_engine(self.cfg)
        self.engine = engine
        generator = self.generator = AvatarVideoGenerator(engine)
        self.audio = QueueAudioOutput(sample_rate=OUTPUT_RATE)
        self.runner = AvatarRunner(room, audio_recv=self.audio, video_gen=generator,
                                   options=generator.options)  # fmt: skip
        generator.attach(self.runner.av_sync)
        await self.runner.start()
        agent_session.output.audio = self.audio
        job = get_job_context(required=False)
        if job is not None:
            job.add_shutdown_callback(self.aclose)

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
        if self.generator is not None:
            await self.generator.aclose()
        self.runner = self.generator = None


# -- remote worker: the agent streams its audio to a worker in the same room ---------------


def remote_audio_output(room: rtc.Room, avatar_identity: str) -> DataStreamAudioOutput:
    """The agent's side: set ``session.output.audio`` to this, and start a worker
    (:func:`serve_avatar`) that joins as ``avatar_identity``. Not tested here (needs a server)."""
    return DataStreamAudioOutput(room, destination_identity=avatar_identity,
                                 sample_rate=OUTPUT_RATE,
                                 wait_remote_track=rtc.TrackKind.KIND_VIDEO)  # fmt: skip


def avatar_worker_token(
    room_name: str,
    agent_identity: str,
    avatar_identity: str = "avatar-worker",
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> str:
    """A token for the worker: it joins ``room_name`` as an agent that publishes on behalf of
    ``agent_identity`` (so clients show its tracks as the agent's). Key and secret default to
    ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``."""
    grants = api.VideoGrants(room_join=True, room=room_name)
    token = api.AccessToken(api_key, api_secret).with_identity(avatar_identity)
    token = token.with_kind("agent").with_grants(grants)
    return token.with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity}).to_jwt()


async def serve_avatar(
    room: rtc.Room, engine: AvatarEngine, *, sender_identity: str | None = None
) -> None:
    """The worker's side, in a connected ``room``: receive the agent's audio stream (from
    ``sender_identity``, else the first agent participant), publish the avatar, until the room
    disconnects. Not tested here: it needs a server, a sender and RPCs between them."""
    generator = AvatarVideoGenerator(engine)
    receiver = DataStreamAudioReceiver(room, sender_identity=sender_identity)
    runner = AvatarRunner(room, audio_recv=receiver, video_gen=generator,
                          options=generator.options)  # fmt: skip
    generator.attach(runner.av_sync)
    gone = asyncio.Event()
    room.on("disconnected", lambda *_: gone.set())
    try:
        await runner.start()
        await gone.wait()
    finally:
        await runner.aclose()
        await generator.aclose()


async def run_avatar_worker(url: str, token: str, cfg: Config | None = None) -> None:
    """A whole worker process's job: connect, build the engine, :func:`serve_avatar`."""
    room = rtc.Room()
    await room.connect(url, token)
    try:
        await serve_avatar(room, await load_engine(cfg))
    finally:
        await room.disconnect()
