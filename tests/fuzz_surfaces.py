"""The input surfaces of ``avatar serve`` and how each drawn input is sent (``tests/test_fuzz.py``,
``scripts/fuzz_server.py``); the strategies are in :mod:`tests.fuzz_inputs`, the server and the
sessions in :mod:`tests.fuzz_harness`.

Each driver sends one input and counts what came back: the HTTP status (raw bytes over TCP, so
malformed requests get through the client), or for a socket or the data channel the fate of a
*sentinel*, a last message the server must answer with an error naming it (answered, closed with
a code, or no answer: the server stopped reading).
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp
import hypothesis
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

from tests import fuzz_inputs as inputs
from tests.fuzz_harness import (
    INPUT_TIMEOUT_S,
    REPLY_TIMEOUT_S,
    Driver,
    Finding,
    FuzzHarness,
    show,
    until,
)

SocketInput = tuple[list[inputs.Message], bool]  # messages, then close at once


# -- the surfaces ---------------------------------------------------------------------------


async def drive_offer_body(h: FuzzHarness, value: tuple[str | None, bytes], out: list[int]) -> None:
    content_type, body = value
    headers = [] if content_type is None else [("Content-Type", content_type.encode("latin-1"))]
    status, answer = await raw_request(h.port, "POST", b"/offer", headers, body)
    out.append(h.status("offer_body", show(value), status, answer))
    if status == 200:
        await h.close_answered(answer)


async def post_offer(h: FuzzHarness, surface: str, shown: str, body: Any, out: list[int]) -> None:
    async with h.http.post(f"{h.url}/offer", json=body) as resp:
        answer = await resp.read()
    out.append(h.status(surface, shown, resp.status, answer))
    if resp.status == 200:
        await h.close_answered(answer)


async def drive_offer_sdp(h: FuzzHarness, value: Any, out: list[int]) -> None:
    ops, eol, audio = value
    sdp = inputs.mutate_sdp(h.base_sdp, ops, eol)
    await post_offer(
        h, "offer_sdp", show(value), {"sdp": sdp, "type": "offer", "audio": audio}, out
    )


async def drive_offer_avatar(h: FuzzHarness, value: Any, out: list[int]) -> None:
    body = {"sdp": h.base_sdp, "type": "offer", "avatar": value, "audio": "none"}
    await post_offer(h, "offer_avatar", show(value), body, out)


async def drive_events(h: FuzzHarness, value: SocketInput, out: list[int]) -> None:
    """A second events socket of the target session (its keeper holds the session open)."""
    messages, abrupt = value
    async with h.http.ws_connect(h.target.peer.socket_url("/ws")) as ws:
        h.tally.note("ws_events", 101)
        await send_and_confirm(
            h, "ws_events", ws, messages, lambda s: json.dumps({"type": s}), abrupt
        )


async def drive_audio(h: FuzzHarness, value: SocketInput, out: list[int]) -> None:
    messages, abrupt = value
    async with h.http.ws_connect(h.target.peer.socket_url("/ws/audio")) as ws:
        h.tally.note("ws_audio", 101)
        # "clear" drops what earlier examples queued: no example waits out another's audio
        clear = inputs.Message("text", '{"type": "clear"}')
        await send_and_confirm(h, "ws_audio", ws, [clear, *messages, clear], lambda s: s, abrupt)


async def send_and_confirm(
    h: FuzzHarness,
    surface: str,
    ws: aiohttp.ClientWebSocketResponse,
    messages: list[inputs.Message],
    sentinel_text: Callable[[str], str],
    abrupt: bool,
) -> None:
    """Send, then a message the server must answer with an error naming it: the socket is
    still read and answered (or it was closed with a code, which is noted). ``abrupt``: the
    client closes its socket right after its messages instead, as a page that leaves."""
    for msg in messages:
        if ws.closed:
            break
        h.tally.messages[surface] += 1
        try:
            await _send_ws(ws, msg)
        except ConnectionError:
            break
    if abrupt:
        await ws.close()
        h.tally.note(surface, "closed by the client")
        return
    sentinel = h.next_sentinel()
    if not ws.closed:
        with suppress(ConnectionError):
            await ws.send_str(sentinel_text(sentinel))
    errors: list[str] = []
    h.tally.note(surface, await _await_sentinel(ws, sentinel, errors))
    h.tally.count_reasons(surface, errors)


async def drive_channel(h: FuzzHarness, messages: list[inputs.Message], out: list[int]) -> None:
    target = h.target
    received = target.peer.received.messages
    seen = len(received)
    for msg in messages:
        h.tally.messages["datachannel"] += 1
        target.channel.send(msg.data)  # str: a text message; bytes (non-UTF-8 too): binary
    sentinel = h.next_sentinel()
    target.channel.send(json.dumps({"type": sentinel}))
    answered = await until(
        lambda: any(sentinel in str(m) for m in received[seen:]), REPLY_TIMEOUT_S
    )
    h.tally.note("datachannel", "answered" if answered else "no answer")
    errors = [e for e in _error_events(received[seen:]) if sentinel not in e]
    h.tally.count_reasons("datachannel", errors)
    if not answered:
        h.tally.lost.append(Finding("datachannel", show(messages), "the channel stopped answering"))


async def drive_socket_query(h: FuzzHarness, q: dict[str, Any], out: list[int]) -> None:
    target = h.target.peer
    ids = {"target": target.session, "healthy": h.healthy.session, "empty": ""}
    params: list[tuple[str, str]] = []
    if q["session"] != "missing":
        params.append(
            ("session", ids[q["session"]] if isinstance(q["session"], str) else q["session"][1])
        )
    if q["key"] != "missing":
        params.append(("key", _key(q["key"], target.key)))
    params += q["extra"]
    enc = (lambda v: v) if q["raw"] else (lambda v: quote(v, safe=""))
    query = "&".join(f"{k}={enc(v)}" for k, v in params)
    target_bytes = f"{q['path']}?{query}".encode("utf-8", "surrogatepass")
    headers = []
    if q["upgrade"]:
        headers += [("Upgrade", b"websocket"), ("Connection", b"Upgrade"),
                    ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", b"13")]  # fmt: skip
    if q["origin"] is not None:
        headers.append(("Origin", q["origin"].encode("latin-1")))
    status, body = await raw_request(h.port, "GET", target_bytes, headers, b"")
    out.append(h.status("ws_query", show(q), status, body))


async def drive_http(h: FuzzHarness, r: dict[str, Any], out: list[int]) -> None:
    path = r["path"] if r["raw"] else quote(r["path"], safe="/%*:@!$&'()+,;=~")
    path += "" if r["query"] is None else "?" + quote(r["query"], safe="=&")
    headers = []
    if r["origin"] is not None:
        headers.append(("Origin", r["origin"].encode("latin-1")))
    if r["authorization"] is not None:
        headers.append(("Authorization", r["authorization"].encode("latin-1")))
    body = r["body"] or b""
    status, answer = await raw_request(h.port, r["method"], path.encode(), headers, body)
    out.append(h.status("http", show(r), status, answer, r["method"]))
    if status == 200 and r["method"] == "POST" and r["path"] == "/offer":
        await h.close_answered(answer)


class Surface(NamedTuple):
    inputs: Callable[[str], st.SearchStrategy[Any]]  # given the real offer
    drive: Driver


def _messages(strategy: st.SearchStrategy[inputs.Message]) -> st.SearchStrategy[Any]:
    return st.lists(strategy, min_size=1, max_size=6)


def _socket(strategy: st.SearchStrategy[inputs.Message]) -> st.SearchStrategy[SocketInput]:
    """Messages, and whether the client closes at once after them (one time in four)."""
    return st.tuples(_messages(strategy), st.sampled_from([False, False, False, True]))


SURFACES: dict[str, Surface] = {
    "offer_body": Surface(inputs.offer_bodies, drive_offer_body),
    "offer_sdp": Surface(inputs.sdp_offers, drive_offer_sdp),
    "offer_avatar": Surface(lambda _: inputs.avatar_names(), drive_offer_avatar),
    "ws_events": Surface(
        lambda _: _socket(inputs.socket_messages(inputs.OVERSIZE_MESSAGE, 40_000)), drive_events
    ),
    "ws_audio": Surface(lambda _: _socket(inputs.audio_messages()), drive_audio),
    "datachannel": Surface(
        lambda _: _messages(inputs.socket_messages(inputs.OVERSIZE_MESSAGE, 60_000)), drive_channel
    ),
    "ws_query": Surface(lambda _: inputs.socket_queries, drive_socket_query),
    "http": Surface(lambda _: inputs.http_requests, drive_http),
}


def fuzz(
    h: FuzzHarness, surface: str, examples: int, strict: bool, seed: int | None = None
) -> None:
    """Run ``examples`` hypothesis inputs on one surface (from the calling thread). ``strict``:
    a 5xx or a dead healthy session fails the example (hypothesis then shrinks it). ``seed``:
    other inputs than the reproducible default (``derandomize``)."""
    spec = SURFACES[surface]

    @settings(
        max_examples=examples, deadline=None, derandomize=seed is None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large, HealthCheck.large_base_example],
    )  # fmt: skip
    @given(spec.inputs(h.base_sdp))
    def one_input(value: Any) -> None:
        h.loop.call(h.try_input(surface, spec.drive, value, strict), 2 * INPUT_TIMEOUT_S + 30)

    if seed is not None:
        one_input = hypothesis.seed(seed)(one_input)
    with warnings.catch_warnings():
        # hypothesis notices the server's thread using ``random`` while it draws: not ours
        warnings.filterwarnings(
            "ignore", "Do not use the `random` module", HypothesisDeprecationWarning
        )
        one_input()


async def raw_request(
    port: int, method: str, target: bytes, headers: list[tuple[str, bytes]], body: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request, bytes as given; (status, body). 0: no HTTP answer at all."""
    head = [f"{method} ".encode() + target + b" HTTP/1.1", f"Host: 127.0.0.1:{port}".encode()]
    head += [name.encode() + b": " + value for name, value in headers]
    head += [f"Content-Length: {len(body)}".encode(), b"Connection: close", b"", b""]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(b"\r\n".join(head) + body)
            await writer.drain()
        except ConnectionError:
            pass  # answered (413) and closed before the body went: read the answer
        return await asyncio.wait_for(_read_answer(reader), REPLY_TIMEOUT_S)
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return 0, b""
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, head[:200]
    status = int(parts[1])
    if status == 101:  # a socket opened: close it
        return status, b""
    try:
        body = await reader.read()
    except ConnectionError:
        body = b""
    return status, _dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body


def _dechunk(raw: bytes) -> bytes:
    body = b""
    while raw:
        size, _, rest = raw.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        body, raw = body + rest[:n], rest[n + 2 :]
    return body


async def _send_ws(ws: aiohttp.ClientWebSocketResponse, msg: inputs.Message) -> None:
    if msg.kind == "text":
        assert isinstance(msg.data, str)
        await ws.send_str(msg.data)
    elif msg.kind == "bytes":
        assert isinstance(msg.data, bytes)
        await ws.send_bytes(msg.data)
    else:  # a text frame whose payload is not UTF-8
        assert isinstance(msg.data, bytes)
        await ws.send_frame(msg.data, WSMsgType.TEXT)


async def _await_sentinel(
    ws: aiohttp.ClientWebSocketResponse, sentinel: str, errors: list[str]
) -> str:
    """ "answered", "closed <code>" or "no answer"; the error events before go to ``errors``."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while not ws.closed:
        try:
            msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            return "no answer"
        if msg.type == WSMsgType.TEXT and sentinel in msg.data:
            return "answered"
        if msg.type == WSMsgType.TEXT:
            errors += _error_events([_error_message_or_event(msg.data)])
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    return f"closed {ws.close_code}"


def _key(choice: Any, right: str) -> str:
    if choice in ("empty", "right"):
        return "" if choice == "empty" else right
    how, text = choice
    return {
        "prefix": text + right, "suffix": right + text, "swapcase": right.swapcase(),
        "truncate": right[: len(text)], "unicode": right[:-1] + "é", "value": text,
    }[how]  # fmt: skip


def _error_message_or_event(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"type": "error", "message": f"(not JSON) {text[:40]}"}


def _error_events(events: list[Any]) -> list[str]:
    """The messages of ``{"type": "error"}`` events (stats and the like are skipped)."""
    return [
        str(e.get("message", ""))
        for e in events
        if isinstance(e, dict) and e.get("type") == "error"
    ]
