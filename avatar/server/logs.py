"""Log lines that name their session: one context variable, set where a session's work begins.

asyncio tasks copy the context they were created in, so every task a request handler or a
session starts (aiortc's included) logs with that session's id without passing it around.
``server.log_format: json`` writes one JSON object per line (for log collectors); a traceback
becomes one field of its line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from contextvars import ContextVar
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

SESSION: ContextVar[str] = ContextVar("avatar_session", default="-")


class SessionFilter(logging.Filter):
    """Adds ``record.session`` (the current session id, ``-`` outside any session)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.session = SESSION.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "session": getattr(record, "session", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup_logging(fmt: str, verbose: bool) -> None:
    """Root handler for ``avatar serve``: text (``time level [session] message``) or JSON."""
    handler = logging.StreamHandler()
    handler.addFilter(SessionFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        text = logging.Formatter("%(asctime)s %(levelname)s [%(session)s] %(name)s: %(message)s")
        text.converter = time.gmtime
        handler.setFormatter(text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a malformed request line (bad characters, ``*``, too long) at ERROR with a
    traceback: a client's mistake, not the server's. One warning line instead. A body that does
    not decode (bad gzip) was answered and logged by the gate; aiohttp's second report, when it
    drains the rest of that body, is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            return False
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad HTTP request: %s", (str(exc)[:200],)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestFilter) for f in server_log.filters):
        server_log.addFilter(_BadRequestFilter())


def quiet_peer_task_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Errors in aiortc's/aioice's own background tasks (a peer's half-negotiated transports
    failing after a refused offer) become one warning line: a peer's doing, the server goes on.
    Any other unhandled task error keeps asyncio's report with its traceback."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        tb = traceback.extract_tb(exc.__traceback__) if exc is not None else []
        if tb and any(part in tb[-1].filename for part in ("/aiortc/", "/aioice/")):
            logging.getLogger("avatar.server").warning(
                "peer connection task failed: %r (%s)", exc, context.get("message", "")
            )
        elif default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
