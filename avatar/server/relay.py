"""Relaying a page's WebSocket to the process that holds its session (a ``--workers`` front's
worker, a pool gateway's node), message by message, close codes included.

:func:`relay_socket` opens the upstream socket (a refusal reaches the page as the upstream's own
JSON error and status) and then :func:`relay` carries text and binary messages both ways, one at
a time (an upstream that stops reading a PCM socket stops the relay reading the page's:
backpressure holds); the close code and reason of the side that closes first reach the other side.
A request that is not a WebSocket upgrade gets the upstream's answer to the same plain request
(its error): no socket is opened upstream for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from avatar.config import ServerConfig
from avatar.errors import RequestError
from avatar.server.sessions import NO_SESSION
from avatar.tasks import cancel, spawn

ABNORMAL = {None, 1005, 1006, 1015}  # no close frame came: the other side gets 1001
SERVER_GONE = b"the process holding this session went away"  # a dead worker or pool node
PAGE_GONE = b"the page went away"


def page_socket(cfg: ServerConfig, path: str) -> web.WebSocketResponse:
    """A page's socket at ``path``, with its limits, as the process holding the session and
    every relay in front of it open it: the events socket (``/ws``) is pinged every half
    ``reap_s`` and takes messages up to ``max_message_kb``; the PCM socket (``/ws/audio``) takes
    messages up to ``max_audio_message_kb``."""
    if path == "/ws":
        return web.WebSocketResponse(heartbeat=cfg.reap_s / 2,
                                     max_msg_size=cfg.limits.max_message_kb << 10)  # fmt: skip
    return web.WebSocketResponse(max_msg_size=cfg.limits.max_audio_message_kb << 10)


async def relay_socket(
    request: web.Request, http: aiohttp.ClientSession, url: str, params: dict[str, str],
    ws: web.WebSocketResponse,
) -> web.WebSocketResponse:  # fmt: skip
    """The page's socket (``request``, answered as ``ws``: :func:`page_socket`) relayed to the
    one at ``url`` until either closes."""
    if not ws.can_prepare(request).ok:  # the upstream's own answer to a plain request
        raise await _refusal(http, url, params)
    try:
        upstream = await http.ws_connect(url, params=params, max_msg_size=0)
    except aiohttp.WSServerHandshakeError:
        raise await _refusal(http, url, params) from None
    except aiohttp.ClientError:
        raise RequestError(NO_SESSION, 404) from None
    try:
        await ws.prepare(request)
        await relay(ws, upstream)
    finally:
        await upstream.close()
    return ws


async def _refusal(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> RequestError:
    """Why the upstream refused the socket (unknown session, wrong key, 409...). aiohttp's
    client drops a refused handshake's body, so the same request without the upgrade fetches
    the upstream's JSON error: it refuses before it would upgrade."""
    try:
        async with http.get(url, params=params) as r:
            body = await r.json(content_type=None)
            return RequestError(str(body["error"]), r.status)
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        return RequestError(NO_SESSION, 404)


async def relay(page: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Both directions until one side closes; its close code and reason go to the other. The
    other direction stops reading first, so the close handshake with that side is complete."""
    up = spawn(_pipe(page, upstream, PAGE_GONE), "ws-to-upstream")
    down = spawn(_pipe(upstream, page, SERVER_GONE), "ws-to-page")
    try:
        done, _ = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        await cancel(up, down)
        first = up if up in done else down
        code, reason = first.result()
        await (upstream if first is up else page).close(code=code, message=reason)
    finally:
        await page.close()


async def _pipe(src: Any, dst: Any, gone: bytes) -> tuple[int, bytes]:
    """Messages from ``src`` to ``dst``, each sent (and drained) before the next is read, until
    ``src`` closes: the close code and reason for ``dst`` (1001 and ``gone`` when ``src``
    dropped without a close frame)."""
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
    if src.close_code in ABNORMAL:
        return 1001, gone
    reason = msg.extra if msg.type == WSMsgType.CLOSE and isinstance(msg.extra, str) else ""
    return src.close_code, reason.encode()[:120]
