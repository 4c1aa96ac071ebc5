"""Pipecat frames <-> the engine: TTS audio in, images and their audio out, and the order of the
frames that follow TTS audio (shared by both services)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

try:  # the package's first import of Pipecat: a missing extra is said here
    from pipecat.frames.frames import OutputImageRawFrame, SpeechOutputAudioRawFrame
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"{exc.name} is missing: install the Pipecat extra, pip install 'avatar[pipecat]'"
    ) from exc

from avatar.audio.pcm import from_pcm16, to_pcm16
from avatar.audio.resample import MonoStream, mono_stream
from avatar.units import OUTPUT_RATE

ORDER_SLACK = 48  # output samples (1 ms): resampling rounds the pushed count

# -- frames: Pipecat <-> engine ---------------------------------------------------------------


def tts_samples(frame: Any) -> np.ndarray:
    """A Pipecat audio frame (s16le, interleaved channels) -> mono float32."""
    pcm = np.frombuffer(frame.audio, "<i2")
    channels = max(int(frame.num_channels), 1)
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    return from_pcm16(pcm)


def image_frame(image: np.ndarray) -> Any:
    """An RGB image as an ``OutputImageRawFrame`` the transport shows in step with its audio."""
    h, w = image.shape[:2]
    frame = OutputImageRawFrame(image=image.tobytes(), size=(w, h), format="RGB")
    frame.sync_with_audio = True
    return frame


class AudioOut:
    """Engine audio (mono float32 at ``rate_in``) -> ``SpeechOutputAudioRawFrame`` at ``rate``
    (one streaming resampler: a frame's pieces join without clicks)."""

    def __init__(self, rate: int, rate_in: int = OUTPUT_RATE) -> None:
        self.rate, self.rate_in = rate, rate_in
        self._resampler: MonoStream | None = None
        self.reset()

    def reset(self) -> None:
        """A new filter (an interruption: the old one's tail of the speech would sound after
        it, and Pipecat's transport would call that the bot speaking)."""
        if self.rate != self.rate_in:
            self._resampler = mono_stream(self.rate, self.rate_in)

    def frame(self, samples: np.ndarray) -> Any:
        if self._resampler is not None:
            samples = self._resampler.push(samples)
        pcm = to_pcm16(samples).tobytes()
        return SpeechOutputAudioRawFrame(audio=pcm, sample_rate=self.rate, num_channels=1)


class InOrder:
    """Downstream frames that came after TTS audio wait until the video frames of that audio
    are out (counts are output-rate samples: pushed into the engine, and out of it)."""

    def __init__(self) -> None:
        self.pushed = 0.0
        self.out = 0.0
        self._held: deque[tuple[float, Any]] = deque()

    @property
    def pending(self) -> bool:
        """Pushed audio has not all come out yet."""
        return self.out + ORDER_SLACK < self.pushed

    def audio_in(self, samples: int, rate: int) -> None:
        self.pushed += samples * OUTPUT_RATE / rate

    def hold(self, frame: Any) -> bool:
        """Keep ``frame`` if audio before it is still to come out (then it is held)."""
        if not self._held and not self.pending:
            return False
        self._held.append((self.pushed, frame))
        return True

    def audio_out(self, samples: int) -> list[Any]:
        """``samples`` of pushed audio went out: the frames that may follow now. Silence the
        engine added (after an interruption) or that released the speech's tail is not counted
        as pushed: what comes out never runs ahead of what was pushed."""
        self.out = min(self.out + samples, self.pushed)
        ready = []
        while self._held and self._held[0][0] <= self.out + ORDER_SLACK:
            ready.append(self._held.popleft()[1])
        return ready

    def interrupt(self) -> list[Any]:
        """The audio is dropped: interruptible frames go with it, the others may follow now."""
        self.out = self.pushed
        kept = [f for _, f in self._held if not f.interruptible]
        self._held.clear()
        return kept

    def flush(self) -> list[Any]:
        frames = [f for _, f in self._held]
        self._held.clear()
        return frames
