"""The fuzzing harness for ``avatar serve``: a real server, a healthy streaming session and a
fuzzed one, each input's outcome counted (:mod:`tests.fuzz_surfaces` has the surfaces).

How it runs: the server, the healthy peer and every request live in one asyncio loop on a
background thread (:class:`LoopThread`). Hypothesis drives from the calling thread: ``@given`` on a
plain function that hands each drawn input to the loop (``asyncio.run_coroutine_threadsafe``) and
waits for its outcome, so shrinking, ``derandomize`` and the example budget work as for any sync
test while the server keeps serving the healthy session between and during examples.

Three kinds of session take part: the *healthy* one (speech, never touched by the fuzzer), the
*target* (``"audio": "none"``; its sockets and data channel are fuzzed with its own key), and one
per offer the server accepts (closed at once through its events socket). A log handler on the
root logger keeps every WARNING+ record with the input in flight when it came.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import aiohttp
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection

from avatar.testing.peer import AvatarPeer
from tests.test_server import running_server, silence, speech

T = TypeVar("T")
OVERRIDES = (
    "render.size=256",  # two live sessions and the fuzzer share a small machine
    "server.max_sessions=10000",  # a leaked session must not turn the fuzz into 503s
    "server.limits.offers_per_minute=100000",
    "server.limits.offer_burst=100000",
    "server.limits.sockets_per_minute=100000",
    "server.limits.messages_per_second=100000",
)
REPLY_TIMEOUT_S = 10.0  # a sentinel not answered by then: the server stopped reading
INPUT_TIMEOUT_S = 45.0


class LoopThread:
    """An asyncio loop running in a daemon thread; :meth:`call` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120.0) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            frame = sys._current_frames().get(self.thread.ident or 0)
            where = "".join(traceback.format_stack(frame)[-12:]) if frame else "?"
            raise AssertionError(f"the server's loop is blocked; it is at:\n{where}") from None

    def close(self) -> None:
        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(cancel_rest(), 30.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)
        self.loop.close()


class Finding(NamedTuple):
    """Something the server should not have done, with the input that led to it."""

    surface: str
    input: str
    detail: str


class FaultLog(logging.Handler):
    """Every WARNING+ record, tagged with the surface and input in flight when it came."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, str, logging.LogRecord]] = []
        self.current = ("setup", "")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((*self.current, record))

    def tracebacks(self, surface: str | None = None) -> list[Finding]:
        """Records with a traceback; ``detail`` starts with :func:`signature`."""
        return [
            Finding(s, i, f"{signature(r)}\n{r.getMessage()[:300]}\n{_format_exc(r)}")
            for s, i, r in self.records
            if r.exc_info and (surface is None or s == surface)
        ]


def describe(findings: list[Finding]) -> str:
    """Each kind of finding once (by its first line), with how often and the first input."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        kind = re.sub(r"(?<= )\d+(?= )", "N", f.detail.splitlines()[0][:160])  # counts vary
        groups.setdefault(f"{f.surface}: {kind}", []).append(f)
    return "\n".join(
        f"x{len(group)} {kind}\n    first input: {group[0].input}\n    "
        + "\n    ".join(group[0].detail.splitlines()[-3:])
        for kind, group in groups.items()
    )


def signature(record: logging.LogRecord) -> str:
    """One line per kind of fault: logger, exception type, and where it was raised."""
    assert record.exc_info is not None
    kind, _, tb = record.exc_info
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = "?"
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f"{'/'.join(code.co_filename.split('/')[-2:])}:{tb.tb_lineno}"
    return f"[{record.name}] {kind.__name__ if kind else '?'} at {where}"


@dataclass
class Tally:
    """What was tried on each surface and what came back."""

    examples: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # socket/channel messages sent
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # status codes, replies
    server_errors: list[Finding] = field(default_factory=list)  # 5xx
    off_contract: list[Finding] = field(default_factory=list)  # a 4xx that is not JSON {"error"}
    lost: list[Finding] = field(default_factory=list)  # sessions that died, unresponsive sockets
    reasons: dict[str, Counter[str]] = field(default_factory=dict)  # refusal messages, cut short
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def note(self, surface: str, outcome: str | int) -> None:
        self.outcomes.setdefault(surface, Counter())[str(outcome)] += 1

    def count_reasons(self, surface: str, messages: list[str]) -> None:
        self.reasons.setdefault(surface, Counter()).update(_reason(m) for m in messages)


@dataclass
class Target:
    """The fuzzed session: its peer, its data channel, and the events socket that keeps it."""

    peer: AvatarPeer
    channel: RTCDataChannel
    keeper: aiohttp.ClientWebSocketResponse
    reader: asyncio.Task[None]


class FuzzHarness:
    """The running server, the healthy and target sessions, and the tally (loop thread only)."""

    def __init__(self, loop: LoopThread, overrides: tuple[str, ...] = ()) -> None:
        self.loop, self.overrides = loop, (*OVERRIDES, *overrides)
        self.tally = Tally()
        self.faults = FaultLog()
        self.base_sdp = ""
        self.started_ns = 0
        self._stack = AsyncExitStack()
        self._sentinels = 0
        self._leaked: set[str] = set()  # sessions already reported as left open
        self._leaked_slots = 0  # slots held by no session, already reported

    async def start(self, healthy_s: float) -> None:
        logging.getLogger().addHandler(self.faults)
        self.url, self.server = await self._stack.enter_async_context(
            running_server(*self.overrides)
        )
        self.port = int(self.url.rsplit(":", 1)[1])
        self.http = await self._stack.enter_async_context(aiohttp.ClientSession())
        self.healthy = AvatarPeer(self.url, looped_speech(healthy_s), summarize=lambda _: None)
        await self.healthy.connect()
        self.base_sdp = await real_offer()
        self.target = await self._open_target()
        await asyncio.sleep(1.0)  # the healthy session's first frames
        self.started_ns = self.healthy.clock.now_ns()

    async def stop(self) -> None:
        try:
            await self._close_target(self.target)
            await self.healthy.close()
            await self._stack.aclose()
        finally:
            logging.getLogger().removeHandler(self.faults)

    # -- one input ------------------------------------------------------------------------

    async def try_input(self, surface: str, drive: Driver, value: Any, strict: bool) -> None:
        """Send one drawn input; count it and what came back; check both sessions after."""
        shown = show(value)
        self.faults.current = (surface, shown)
        self.tally.examples[surface] += 1
        statuses: list[int] = []
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(drive(self, value, statuses), INPUT_TIMEOUT_S)
        except TimeoutError:
            self.tally.note(surface, "timeout")
            stuck = f"no answer in {INPUT_TIMEOUT_S:.0f} s; tasks: {_task_stacks()}"
            self.tally.lost.append(Finding(surface, shown, stuck))
        self.tally.seconds[surface] += time.monotonic() - t0
        errors = [s for s in statuses if s >= 500]
        try:
            await asyncio.wait_for(self._check_sessions(surface, shown), INPUT_TIMEOUT_S)
        except TimeoutError:
            stuck = f"checking the sessions took over {INPUT_TIMEOUT_S:.0f} s: {_task_stacks()}"
            self.tally.lost.append(Finding(surface, shown, stuck))
        if strict:
            assert not errors, f"{surface}: HTTP {errors} for {shown}"
            assert self.healthy_alive(), f"the healthy session died after {surface} input {shown}"

    def status(self, surface: str, shown: str, status: int, body: bytes, method: str = "") -> int:
        """Count an HTTP answer and check the error contract."""
        self.tally.note(surface, status)
        reason = _error_message(body)
        self.tally.count_reasons(surface, [] if reason is None else [reason])
        if status >= 500:
            self.tally.server_errors.append(Finding(surface, shown, f"{status}: {body[:300]!r}"))
        elif status >= 400 and method != "HEAD" and reason is None:
            self.tally.off_contract.append(Finding(surface, shown, f"{status}: {body[:120]!r}"))
        return status

    def healthy_alive(self) -> bool:
        sid = self.healthy.session
        return sid in self.server.sessions and self.healthy.pc.connectionState == "connected"

    async def _check_sessions(self, surface: str, shown: str) -> None:
        target = self.target
        session = self.server.sessions.get(target.peer.session)
        alive = session is not None and target.peer.pc.connectionState == "connected"
        if not alive or target.channel.readyState != "open" or target.keeper.closed:
            self.tally.lost.append(Finding(surface, shown, "the target session died"))
            await self._replace_target()
        elif session is not None and session.candidates >= session.limits.max_candidates - 8:
            await self._replace_target()  # a fresh budget of trickled candidates
        if not self.healthy_alive():
            self.tally.lost.append(Finding(surface, shown, "the HEALTHY session died"))
        await self._check_leaks(surface, shown)

    async def _check_leaks(self, surface: str, shown: str) -> None:
        """Only the healthy and target sessions hold slots once an input is done."""
        mine = {self.healthy.session, self.target.peer.session}
        mine |= self._leaked
        await until(lambda: set(self.server.sessions) <= mine, 1.0)  # closing ones go
        extra = set(self.server.sessions) - mine - self._leaked
        slots = self.server.sessions.slots.used - len(self.server.sessions)
        if extra or slots > self._leaked_slots:
            held = self.server.sessions.slots.used
            used = f"{held} slots held by {len(self.server.sessions)} sessions"
            self.tally.lost.append(Finding(surface, shown, f"sessions left open: {used}"))
            self._leaked |= extra
            self._leaked_slots = max(slots, self._leaked_slots)

    # -- sessions ---------------------------------------------------------------------------

    async def _open_target(self) -> Target:
        peer = AvatarPeer(self.url, None, summarize=lambda _: None)
        await peer.connect()
        keeper = await self.http.ws_connect(peer.socket_url("/ws"))
        reader = asyncio.get_running_loop().create_task(_drain(keeper), name="fuzz-keeper")
        channel = peer.channel
        assert channel is not None
        await until(lambda: channel.readyState == "open", 10.0)
        return Target(peer, channel, keeper, reader)

    async def _close_target(self, target: Target) -> None:
        await target.keeper.close()
        target.reader.cancel()
        await target.peer.close()

    async def _replace_target(self) -> None:
        await self._close_target(self.target)
        self.target = await self._open_target()

    async def close_answered(self, body: bytes) -> None:
        """An offer the server answered: its events socket, opened and closed, ends it."""
        answer = json.loads(body)
        url = self.url.replace("http", "ws", 1)
        query = {"session": answer["session"], "key": answer["key"]}
        async with self.http.ws_connect(f"{url}/ws", params=query):
            pass
        await until(lambda: answer["session"] not in self.server.sessions, 5.0)

    def next_sentinel(self) -> str:
        self._sentinels += 1
        return f"sentinel-{self._sentinels}"

    # -- what the healthy session saw -------------------------------------------------------

    def healthy_stream(self) -> HealthyStream:
        now = self.healthy.clock.now_ns()
        arrivals = [t for t, _, _ in self.healthy.received.video if t >= self.started_ns]
        times = np.array([self.started_ns, *arrivals, now], np.float64) / 1e9
        seconds = (now - self.started_ns) / 1e9
        return HealthyStream(
            self.healthy_alive(), len(arrivals), seconds, float(np.diff(times).max())
        )


class HealthyStream(NamedTuple):
    connected: bool
    frames: int
    seconds: float
    max_gap_s: float  # the longest wait between received frames (from the start, to now)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


Driver = Callable[[FuzzHarness, Any, list[int]], Awaitable[None]]


@contextmanager
def running_harness(healthy_s: float, *overrides: str) -> Iterator[FuzzHarness]:
    """A started :class:`FuzzHarness` on its own loop thread; everything closed after."""
    loop = LoopThread()
    harness = FuzzHarness(loop, overrides)
    try:
        loop.call(harness.start(healthy_s))
        yield harness
    finally:
        try:
            loop.call(harness.stop())
        finally:
            loop.close()


# -- helpers ----------------------------------------------------------------------------------


def looped_speech(seconds: float) -> np.ndarray:
    """The bundled speech with pauses, repeated for ``seconds`` (the peer sends silence after)."""
    piece = np.concatenate([speech(), silence(1.0)])
    return np.tile(piece, int(np.ceil(seconds / (len(piece) / 48000))))


async def real_offer() -> str:
    """An offer as a page makes it: audio and video transceivers and a data channel."""
    pc = RTCPeerConnection()
    pc.createDataChannel("avatar")
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _error_message(body: bytes) -> str | None:
    """The ``error`` of a JSON refusal, else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def _reason(message: str) -> str:
    """A refusal message without what the input put in it (for counting)."""
    cut = min((i for i in (message.find("'"), message.find('"'), message.find("(")) if i > 0),
              default=60)  # fmt: skip
    return message[: min(cut, 60)].rstrip(" :")


def show(value: Any, limit: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _task_stacks() -> str:
    """Where the loop's tasks wait (for a report of a hang)."""
    lines = []
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=3)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        lines.append(f"{task.get_name()}: {where}")
    return "; ".join(sorted(lines))[:3000]


def _format_exc(record: logging.LogRecord) -> str:
    formatter = logging.Formatter()
    assert record.exc_info is not None
    return formatter.formatException(record.exc_info)[-1500:]
