"""Relaying a page's WebSocket to a worker's, message by message, close codes included.

Text and binary messages both ways, one message at a time (a worker that stops reading a PCM
socket stops the front reading the page's: backpressure holds); the close code and reason of the
side that closes first reach the other side.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from avatar.tasks import cancel, spawn

ABNORMAL = {None, 1005, 1006, 1015}  # no close frame came: the other side gets 1001


async def relay(page: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Both directions until one side closes; its close code and reason go to the other. The
    other direction stops reading first, so the close handshake with that side is complete."""
    up = spawn(_pipe(page, upstream), "ws-to-worker")
    down = spawn(_pipe(upstream, page), "ws-to-page")
    try:
        done, _ = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        await cancel(up, down)
        first = up if up in done else down
        code, reason = first.result()
        await (upstream if first is up else page).close(code=code, message=reason)
    finally:
        await page.close()


async def _pipe(src: Any, dst: Any) -> tuple[int, bytes]:
    """Messages from ``src`` to ``dst``, each sent (and drained) before the next is read, until
    ``src`` closes: the close code and reason for ``dst``."""
    while True:
        msg = await src.receive()
        try:
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:
                break
        except ConnectionError:  # ``dst`` is gone
            return 1001, b""
    reason = msg.extra if msg.type == WSMsgType.CLOSE and isinstance(msg.extra, str) else ""
    return (1001 if src.close_code in ABNORMAL else src.close_code), reason.encode()[:120]
