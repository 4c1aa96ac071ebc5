"""Log lines that name their session: one context variable, set where a session's work begins.

asyncio tasks copy the context they were created in, so every task a request handler or a
session starts (aiortc's included) logs with that session's id without passing it around.
``server.log_format: json`` writes one JSON object per line (for log collectors); a traceback
becomes one field of its line.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

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
