"""A job's audio input, read before anything is queued: an upload or an ``audio_url``.

Both are streamed to a temporary file with a cap (``renders.max_audio_mb``: 413 past it), then
probed: a file with no decodable audio is a 415, speech longer than ``renders.max_audio_s`` a
413. An ``audio_url`` must be public (:func:`~avatar.renders.webhook.check_url`) and answer in
full within ``renders.fetch_timeout_s`` (a 422 otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import BodyPartReader

from avatar.audio.io import load_audio, probe_audio
from avatar.config import RendersConfig
from avatar.errors import AudioInputError, RequestError
from avatar.renders.webhook import check_url

CHUNK = 1 << 16


async def save_upload(part: BodyPartReader, path: Path, cfg: RendersConfig) -> None:
    """The multipart ``audio`` part into ``path``, at most ``max_audio_mb``."""

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await part.read_chunk(CHUNK):
            yield chunk

    await _write_capped(chunks(), path, cfg, "the audio")


async def _write_capped(
    chunks: AsyncIterator[bytes], path: Path, cfg: RendersConfig, what: str
) -> None:
    """``chunks`` into ``path``; a 413 once they pass ``max_audio_mb``."""
    cap, size = int(cfg.max_audio_mb * (1 << 20)), 0
    with path.open("wb") as f:
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise RequestError(f"{what} is over {cfg.max_audio_mb:g} MB "
                                   "(renders.max_audio_mb)", 413)  # fmt: skip
            await asyncio.to_thread(f.write, chunk)


async def fetch_audio(url: str, path: Path, cfg: RendersConfig) -> None:
    """``url`` into ``path``: public, at most ``max_audio_mb``, within ``fetch_timeout_s``."""
    await check_url(url, "audio_url", cfg)
    cap = int(cfg.max_audio_mb * (1 << 20))
    timeout = aiohttp.ClientTimeout(total=cfg.fetch_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            if response.status != 200:
                raise RequestError(f"audio_url answered HTTP {response.status}", 422)
            if (response.content_length or 0) > cap:
                raise RequestError(f"audio_url is over {cfg.max_audio_mb:g} MB", 413)
            await _write_capped(response.content.iter_chunked(CHUNK), path, cfg, "audio_url")
    except TimeoutError:
        raise RequestError(f"audio_url did not answer in full within {cfg.fetch_timeout_s:g} s",
                           422) from None  # fmt: skip
    except aiohttp.ClientError as e:
        raise RequestError(f"audio_url could not be fetched: {str(e)[:120]}", 422) from None


async def check_audio(path: Path, cfg: RendersConfig, what: str) -> float:
    """Seconds of audio in ``path``; 415 when it is not audio, 413 when too long."""
    try:
        seconds = await asyncio.to_thread(_duration_s, path)
    except AudioInputError as e:  # the message names our temporary file: not the client's
        reason = str(e).replace(str(path), "it")
        raise RequestError(f"{what} is not audio we can decode: {reason[:160]}", 415) from None
    if seconds > cfg.max_audio_s:
        raise RequestError(f"{what} is {seconds:.0f} s long; at most {cfg.max_audio_s:g} s "
                           "(renders.max_audio_s)", 413)  # fmt: skip
    if seconds <= 0:
        raise RequestError(f"{what} has no audio samples", 422)
    return seconds


def _duration_s(path: Path) -> float:
    info = probe_audio(path)
    if info.duration_s is not None:
        return info.duration_s
    return len(load_audio(path, rate=8000)) / 8000
