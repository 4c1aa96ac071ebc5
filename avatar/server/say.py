"""A session's text-to-speech: ``{"type": "say", "text": "...", "voice": "slt"}``.

Sessions opened with ``"audio": "none"`` take text as well as PCM: each ``say`` is checked at once
(:func:`avatar.data.tts.clean_text`: an error names what is wrong and the session goes on), cut into
sentences and queued; one task speaks the queue in order, a sentence at a time, through the
voice's long-lived festival process (:func:`avatar.data.tts.say_sentence`, in the executor), and
pushes each sentence's audio to the engine as soon as it is synthesised (a say that starts from
silence without festival's ~0.17 s lead-in pause, all but 50 ms of it), never more than
``max_audio_ahead_s`` ahead of playout (the PCM socket's backpressure). So the first sentence
plays while the next are synthesised, and a long text costs no memory up front.

:meth:`Speaker.clear` (the session's ``clear``) empties the queue and cancels the task: a sentence
being synthesised is discarded when festival returns it, and the engine's own clear drops what
was pushed. Text and PCM sockets feed the same engine: their audio plays one after the other.

A voice's festival process is shared by every session of the server process and started by the
first session without a microphone; the HTS voice ``slt`` holds ~330 MB resident (measured), the
diphone voices far less. Each ``--workers`` process has its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from avatar.data import tts
from avatar.engine.engine import AvatarEngine
from avatar.errors import AvatarError, TextError
from avatar.frames import AudioChunk
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.server")


@dataclass(frozen=True, slots=True)
class Utterance:
    """One ``say``: its sentences, in order, and the voice."""

    sentences: tuple[str, ...]
    voice: str


class Speaker:
    """Queued ``say`` texts -> speech pushed to one session's engine; see the module docstring."""

    def __init__(
        self,
        engine: AvatarEngine,
        executor: Executor | None,
        on_error: Callable[[str], None],
        *,
        max_queued: int = 8,
        max_ahead_s: float = 4.0,
    ) -> None:
        self.engine, self.executor, self.on_error = engine, executor, on_error
        self.max_queued, self.max_ahead_s = max_queued, max_ahead_s
        self._queue: deque[Utterance] = deque()
        self._task: asyncio.Task[None] | None = None

    def say(self, text: object, voice: object = None) -> None:
        """Queue ``text``; :class:`TextError` (the message for the peer) when it cannot be."""
        if not isinstance(text, str):
            raise TextError("say needs a string 'text'")
        if voice is not None and not isinstance(voice, str):
            raise TextError("say's 'voice' is a string (a voice name)")
        if voice is not None and voice not in tts.VOICES:
            raise TextError(f"unknown voice {voice[:40]!r}: choose one of {', '.join(tts.VOICES)}")
        if len(self._queue) >= self.max_queued:
            raise TextError(f"{self.max_queued} say messages are already waiting: send clear, "
                            "or wait for them to be spoken")  # fmt: skip
        sentences = tts.split_sentences(tts.clean_text(text, max_chars=1 << 20))
        self._queue.append(Utterance(tuple(sentences), voice or tts.DEFAULT_VOICE))
        if self._task is None or self._task.done():
            self._task = spawn(self._speak(), "say")

    def warm(self, voice: str = tts.DEFAULT_VOICE) -> None:
        """Start the voice's festival process now (in the executor), so the first ``say`` pays
        for its sentence only. Failures are left to that ``say`` to report."""
        asyncio.get_running_loop().run_in_executor(self.executor, _warm, voice)

    def clear(self) -> None:
        """Stop at once: nothing queued is spoken, and the sentence in synthesis is discarded
        (a cancelled task pushes nothing more: it is woken with the cancellation, not the
        result)."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        self._queue.clear()
        if self._task is not None:
            await cancel(self._task)

    async def _speak(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            utterance = self._queue.popleft()
            for i, sentence in enumerate(utterance.sentences):
                try:
                    speech = await loop.run_in_executor(
                        self.executor, tts.say_sentence, sentence, utterance.voice
                    )
                except AvatarError as exc:  # a voice not installed, festival gone
                    self.on_error(f"say: {exc}")
                    break
                if i == 0 and not self.engine.pending_audio_s:  # a reply starts at once;
                    speech = tts.trim_start(speech)  # what follows speech keeps its pause
                self.engine.push_audio(AudioChunk(speech.audio, speech.rate))
                await self.engine.wait_for_room(self.max_ahead_s)


def _warm(voice: str) -> None:
    try:
        tts.say_sentence("Hello.", voice)
    except AvatarError as exc:
        log.warning("text-to-speech is not available: %s", exc)
