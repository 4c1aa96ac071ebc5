"""The one way background tasks are started: named, kept alive, failures logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from avatar.clock import Clock
from avatar.units import NS_PER_S

log = logging.getLogger("avatar")
T = TypeVar("T")
_running: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a task called ``name``; an exception other than cancellation is logged."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks and wait until they have finished (the calling task, if among them, is
    left to finish what it is doing)."""
    me = asyncio.current_task()
    live = [t for t in tasks if t is not None and not t.done() and t is not me]
    for t in live:
        t.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)


async def within(clock: Clock, timeout_s: float, *aws: Coroutine[Any, Any, Any]) -> bool:
    """Run ``aws`` together for at most ``timeout_s`` on ``clock``: True if all finished in
    time (the others are cancelled)."""
    work = spawn(_gather(*aws), "within")
    timer = spawn(clock.sleep_until(clock.now_ns() + round(timeout_s * NS_PER_S)), "within-timer")
    await asyncio.wait([work, timer], return_when=asyncio.FIRST_COMPLETED)
    finished = work.done()
    await cancel(work, timer)
    return finished


async def _gather(*aws: Coroutine[Any, Any, Any]) -> None:
    await asyncio.gather(*aws)
