"""The avatar's engine in the bot's process (:class:`AvatarVideoService`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InterruptionFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from avatar.clock import Clock, MonotonicClock
from avatar.compose.engines import build_engine
from avatar.config import Config, load_config
from avatar.engine.engine import AvatarEngine
from avatar.frames import AudioChunk, VideoFrame
from avatar.integrations.pipecat.frames import AudioOut, InOrder, image_frame, tts_samples
from avatar.tasks import cancel, spawn
from avatar.units import OUTPUT_RATE

EngineBuilder = Callable[[], AvatarEngine]


# -- the in-process service -------------------------------------------------------------------


class AvatarVideoService(FrameProcessor):
    """The avatar's engine in this process, between the TTS and the output transport (see the
    module docstring for what it does with each frame).

    ``config``: the engine's configuration (``load_config()`` if None). ``engine``: builds the
    engine instead (tests pass one on a fake clock; it is called in an executor during the
    pipeline's set-up, where models load). ``clock``: the clock of the default engine."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        engine: EngineBuilder | None = None,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if engine is None:
            cfg = config or load_config()
            engine = partial(build_engine, cfg, clock or MonotonicClock(), realtime=True)
        self._build = engine
        self.engine: AvatarEngine | None = None
        self._audio: AudioOut | None = None
        self._order = InOrder()
        self._pump: asyncio.Task[None] | None = None
        self._cleared_ns: int | None = None  # engine clock: frames rendered before are stale

    async def setup(self, setup: Any) -> None:
        """Build the engine off the event loop (it loads models) for the output rate."""
        await super().setup(setup)
        self._audio = AudioOut(setup.audio_out_sample_rate)
        loop = asyncio.get_running_loop()
        self.engine = await loop.run_in_executor(None, self._build)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def process_frame(self, frame: Any, direction: Any) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # the transport starts before frames come
            self._start()
        elif isinstance(frame, TTSAudioRawFrame):
            self._push_tts(frame)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._end(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        else:
            await self._pass(frame, direction)

    def _start(self) -> None:
        if self.engine is not None and self._pump is None:
            self.engine.start()
            self._pump = spawn(self._frames_out(self.engine), f"pipecat-avatar-{id(self):x}")

    def _push_tts(self, frame: Any) -> None:
        if self.engine is None or self._pump is None:
            return
        samples = tts_samples(frame)
        self.engine.push_audio(AudioChunk(samples, frame.sample_rate))
        self._order.audio_in(len(samples), frame.sample_rate)

    async def _pass(self, frame: Any, direction: Any) -> None:
        """Upstream and system frames go at once; the rest keep their place after the audio."""
        downstream = direction == FrameDirection.DOWNSTREAM
        if downstream and not isinstance(frame, SystemFrame) and self._order.hold(frame):
            if isinstance(frame, TTSStoppedFrame):
                self._release_tail()
            return
        await self.push_frame(frame, direction)

    def _release_tail(self) -> None:
        """Silence after the speech: the engine holds its model's look-ahead back until more
        audio comes; this much more lets the speech's last frame out."""
        engine = self.engine
        if engine is None or self._pump is None or not self._order.pending:
            return
        pad = engine.motion.delay + round(OUTPUT_RATE / engine.fps)
        engine.push_audio(AudioChunk(np.zeros(pad, np.float32), OUTPUT_RATE))

    async def _interrupt(self, frame: Any, direction: Any) -> None:
        if self.engine is not None and self._pump is not None:
            self.engine.clear_buffer()
            self._cleared_ns = self.engine.clock.now_ns()
        if self._audio is not None:
            self._audio.reset()
        for kept in self._order.interrupt():
            await self.push_frame(kept)
        await self.push_frame(frame, direction)

    async def _end(self, frame: Any, direction: Any) -> None:
        """The audio pushed so far plays out, then the engine closes and ``frame`` goes on."""
        pump = self._pump
        if self.engine is not None and pump is not None:
            self._release_tail()
            self.engine.end_input()
            await asyncio.wait([pump])
        await self._close()
        for held in self._order.flush():
            await self.push_frame(held)
        await self.push_frame(frame, direction)

    async def _close(self) -> None:
        pump, self._pump = self._pump, None
        await cancel(pump)
        if self.engine is not None:
            await self.engine.aclose()

    async def _frames_out(self, engine: AvatarEngine) -> None:
        """Each engine frame: its image, then its audio; then the frames waiting for it."""
        assert self._audio is not None
        async for video in engine:
            if self._stale(video) or video.audio is None:
                continue
            await self.push_frame(image_frame(video.image))
            if self._stale(video):  # an interruption came meanwhile: its audio is dropped
                continue
            await self.push_frame(self._audio.frame(video.audio.samples))
            if video.timing is not None and video.timing.source_index >= 0:
                for held in self._order.audio_out(len(video.audio.samples)):
                    await self.push_frame(held)

    def _stale(self, video: VideoFrame) -> bool:
        """Rendered from pushed audio before the last interruption."""
        timing, cleared = video.timing, self._cleared_ns
        return (
            cleared is not None
            and timing is not None
            and timing.source_index >= 0
            and timing.render_start_ns < cleared
        )
