"""``GET /ws?session=ID&key=KEY``: the session's events socket.

From the page: trickled ICE candidates ``{"type": "candidate", "candidate": {...}}`` and the
control messages the data channel takes too (``clear``, ``subscribe``, ``say``). To the page:
every session event (``ready``, ``stats``, ``error``, ``shutdown``...), as on the data channel.
Each message is size- and rate-limited, then parsed once. When the page's last events socket
closes with a close frame (or breaks the protocol), the page is gone and the session ends. A
socket that drops without one (1006: the network, or a pool's gateway that relayed it died) says
nothing of the page: the session goes on, and ends when its data channel closes or its media falls
silent (``reap_s``).
"""

from __future__ import annotations

from aiohttp import WebSocketError, WSMsgType, web

from avatar.config import ServerConfig
from avatar.errors import RequestError
from avatar.server.ice import add_candidate, trickled_candidate
from avatar.server.relay import ABNORMAL, page_socket
from avatar.server.session import Session, json_object


async def serve_events(
    request: web.Request, session: Session, cfg: ServerConfig
) -> web.WebSocketResponse:
    ws = page_socket(cfg, "/ws")
    await ws.prepare(request)
    session.sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_message(session, msg.data, cfg)
            elif msg.type == WSMsgType.BINARY:
                session.send_error("the events socket takes JSON text messages")
    finally:
        session.sockets.discard(ws)
        dropped = ws.close_code in ABNORMAL and not isinstance(ws.exception(), WebSocketError)
        if not session.sockets and not dropped:  # the page is gone (or broke the protocol)
            await session.on_gone("events socket closed")
    return ws


async def _on_message(session: Session, text: str, cfg: ServerConfig) -> None:
    if not session.admit_message(text):
        return
    msg = json_object(text)
    if msg is None or msg.get("type") != "candidate":
        session.dispatch(msg)
        return
    try:
        ice = trickled_candidate(msg.get("candidate"))
        if ice is None:
            return
        session.candidates += 1
        if session.candidates > cfg.limits.max_candidates:
            raise RequestError(f"too many ICE candidates (at most {cfg.limits.max_candidates})")
        await add_candidate(session.pc, ice)
    except RequestError as exc:
        session.send_error(str(exc))
