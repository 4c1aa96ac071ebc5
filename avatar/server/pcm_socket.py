"""``GET /ws/audio?session=ID&key=KEY``: PCM input for text-to-speech or an agent.

Sessions opened with ``"audio": "none"`` take their speech here. The protocol: a text
``{"type": "format", "sample_rate": N, "channels": 1|2}`` first, then binary s16le messages of
whole sample frames; ``{"type": "clear"}`` interrupts (queued audio is dropped, the avatar goes
idle); ``{"type": "end"}`` closes the socket. A mistake is answered with ``{"type": "error",
"message"}`` and the socket stays open. At most ``server.limits.max_audio_ahead_s`` of audio
waits ahead of playout: the socket is not read while the session is that far ahead
(backpressure), so a producer faster than real time is slowed down, never cut off. A ``clear``
sent here is read after the audio sent before it, so up to that much later; ``clear`` on the
events socket or the data channel acts at once (found by the Pipecat work, whose remote service
keeps at most 1 s ahead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from aiohttp import WSMsgType, web

from avatar.audio.pcm import from_pcm16
from avatar.config import ServerConfig
from avatar.errors import AudioInputError, RequestError
from avatar.frames import AudioChunk
from avatar.server.relay import page_socket
from avatar.server.session import Session, json_object


async def serve_pcm(
    request: web.Request, session: Session, cfg: ServerConfig
) -> web.WebSocketResponse:
    if session.mic:
        raise RequestError("this session takes its audio from the microphone; "
                           "open it with \"audio\": \"none\" to stream PCM", 409)  # fmt: skip
    ws = page_socket(cfg, "/ws/audio")
    await ws.prepare(request)
    session.audio_sockets.add(ws)
    reader = PcmReader()
    async for msg in ws:
        if session.closed.is_set():
            break
        try:
            if msg.type == WSMsgType.TEXT:
                if reader.control(msg.data, session.clear) == "end":
                    break
            elif msg.type == WSMsgType.BINARY:
                session.engine.push_audio(reader.chunk(msg.data))
                await session.engine.wait_for_room(cfg.limits.max_audio_ahead_s)
        except AudioInputError as exc:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "error", "message": str(exc)})
    session.audio_sockets.discard(ws)
    return ws


class PcmReader:
    """The PCM socket's state: its format, then s16le blocks -> engine audio chunks."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self.channels = 1

    def control(self, text: str, clear: Callable[[], None]) -> str:
        """A text message: ``format``, ``clear`` (calls ``clear``) or ``end``; its type."""
        msg = json_object(text)
        kind = msg.get("type") if msg else None
        if kind == "format" and msg is not None:
            self._set_format(msg.get("sample_rate"), msg.get("channels", 1))
        elif kind == "clear":
            clear()
        elif kind != "end":
            raise AudioInputError(f"unknown control message {text[:60]!r}")
        return str(kind)

    def _set_format(self, rate: object, channels: object) -> None:
        if type(rate) is not int or not 8000 <= rate <= 192000:
            raise AudioInputError(f"sample_rate must be an integer 8000-192000, got "
                                  f"{str(rate)[:20]!r}")  # fmt: skip
        if type(channels) is not int or channels not in (1, 2):
            raise AudioInputError(f"channels must be 1 or 2, got {str(channels)[:20]!r}")
        self.rate, self.channels = rate, channels

    def chunk(self, data: bytes) -> AudioChunk:
        if self.rate is None:
            raise AudioInputError('send {"type": "format", "sample_rate": N} before audio')
        if len(data) % (2 * self.channels):
            raise AudioInputError("binary messages must hold whole s16le sample frames")
        pcm = from_pcm16(np.frombuffer(data, "<i2"))
        mono = pcm.reshape(-1, self.channels).mean(axis=1)
        return AudioChunk(mono.astype(np.float32), self.rate)
