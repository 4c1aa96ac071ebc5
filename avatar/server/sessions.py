"""The sessions of one process: opened, negotiated, watched, closed and drained.

An offer reaches :meth:`Sessions.open` checked (:mod:`avatar.server.offer`). Its slot is reserved
before anything is built; the engine is built in the executor, a few at a time, so a burst of
offers cannot starve running sessions; then the peer connection answers. A session ends when its
peer fails or closes, when it never connects (``CONNECT_TIMEOUT_S``), when its page goes away
(:meth:`Session.on_gone`), or when the server stops; every end frees its slot exactly once and is
logged with its reason.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol

from aiortc import RTCPeerConnection

from avatar.clock import Clock
from avatar.config import Config
from avatar.engine.engine import AvatarEngine
from avatar.errors import RequestError
from avatar.memory import give_back_memory
from avatar.observe import Observer, combine
from avatar.profile.profiler import Profiler
from avatar.server.aiortc_hooks import shorten_audio_jitter_buffer
from avatar.server.ice import rtc_configuration
from avatar.server.limits import SessionSlots
from avatar.server.logs import SESSION
from avatar.server.metrics import ServerMetrics
from avatar.server.negotiate import answer_offer, receive_microphone_only, send_avatar
from avatar.server.session import Session
from avatar.tasks import spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")
CONNECT_TIMEOUT_S = 30.0
DRAIN_STAGGER_S = 0.25  # between two sessions told to move (at most half the drain window)
NO_SESSION = "no such session, or a wrong key (POST /offer first)"


class EngineFactory(Protocol):
    """Builds a session's engine (blocking: the sessions call it in their executor).
    ``live``: microphone input; otherwise buffered PCM (text-to-speech) that plays out in full."""

    def __call__(self, avatar: str, live: bool, observer: Observer) -> AvatarEngine: ...


class SessionWatcher(Protocol):
    """Hears every session that opens (before its answer leaves) and every one that ends, with
    its reason (a pool's node records them: :class:`avatar.cluster.node.NodeAgent`)."""

    async def opened(self, session: Session) -> None: ...

    def closed(self, session: Session, reason: str) -> None: ...


class Sessions(Mapping[str, Session]):
    """The open sessions by id (a read-only mapping); see the module docstring.

    ``sid_prefix`` names the process in every id it gives (``w1.`` in worker 1 of ``avatar
    serve --workers N``: the front routes sockets by it)."""

    def __init__(
        self,
        cfg: Config,
        engines: EngineFactory,
        clock: Clock,
        executor: Executor,
        metrics: ServerMetrics,
        wall: Callable[[], float],
        sid_prefix: str = "",
    ) -> None:
        self.cfg, self.engines, self.clock, self.executor = cfg, engines, clock, executor
        self.watchers: tuple[SessionWatcher, ...] = ()
        self.metrics, self.wall, self.sid_prefix = metrics, wall, sid_prefix
        self.slots = SessionSlots(cfg.server.max_sessions)
        self.builds = asyncio.Semaphore(cfg.server.limits.engine_builds)
        self.draining = False
        self._open: dict[str, Session] = {}
        self._heard: set[str] = set()  # sessions the watchers heard open

    def add_watcher(self, watcher: SessionWatcher) -> None:
        self.watchers = (*self.watchers, watcher)

    def __getitem__(self, sid: str) -> Session:
        return self._open[sid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return self.slots.used >= self.slots.capacity

    def find(self, sid: str, key: str) -> Session:
        """The session named by ``sid`` and opened by its ``key`` (404 for either wrong: an id
        alone reveals nothing)."""
        session = self._open.get(sid)
        if session is None or not hmac.compare_digest(key.encode(), session.key.encode()):
            raise RequestError(NO_SESSION, 404)
        SESSION.set(sid)
        return session

    # -- opening ------------------------------------------------------------------------------

    async def open(
        self, sdp: str, avatar: str, mic: bool, publish: bool = False
    ) -> tuple[Session, str]:
        """A new session answering ``sdp``: (the session, the answer's SDP). ``publish``: the
        peer only sends its microphone (WHIP) and the avatar goes to other peers
        (:mod:`avatar.server.whip`); otherwise the answer sends the avatar back."""
        if self.draining:
            raise RequestError("the server is shutting down", 503, retry_after_s=30)
        if not self.slots.reserve():
            self.metrics.refused.labels("full").inc()
            raise RequestError(f"server full ({self.slots.capacity} sessions)", 503,
                               retry_after_s=10)  # fmt: skip
        try:
            session = await self._build(avatar, mic)
        except BaseException:
            self.slots.release()
            raise
        try:
            answer = await self._negotiate(session, sdp, publish)
        except BaseException:
            await self.close(session, "error")
            raise
        self._heard.add(session.sid)  # before: an end while a watcher writes is heard too
        for watcher in self.watchers:
            await watcher.opened(session)
        self.metrics.offers.labels("answered").inc()
        return session, answer

    async def _build(self, avatar: str, mic: bool) -> Session:
        cfg = self.cfg
        sid = self.sid_prefix + secrets.token_urlsafe(9)
        SESSION.set(sid)  # this handler's task and every task it starts log with the id
        profiler = (
            Profiler(self.clock, cfg.motion.fps, sid, keep=3000) if cfg.server.profile else None
        )
        observer = combine(*(o for o in (profiler, self.metrics.stages) if o is not None))
        engine = await self._build_engine(avatar, mic, observer)
        pc = RTCPeerConnection(rtc_configuration(cfg.server, self.wall()))
        session = Session(
            sid, pc, engine, self.clock, self.executor, avatar=avatar, mic=mic,
            stats_interval_s=cfg.server.stats_interval_s, observer=observer,
            limits=cfg.server.limits, profile=profiler is not None, reap_s=cfg.server.reap_s,
        )  # fmt: skip
        self._open[sid] = session
        session.on_closed = self._forget
        self._watch(session)
        return session

    async def _build_engine(self, avatar: str, mic: bool, observer: Observer) -> AvatarEngine:
        loop = asyncio.get_running_loop()
        self.metrics.collector.building += 1
        try:
            async with self.builds:
                return await loop.run_in_executor(
                    self.executor, self.engines, avatar, mic, observer
                )
        finally:
            self.metrics.collector.building -= 1

    def _watch(self, session: Session) -> None:
        pc = session.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: %s", session.sid, pc.connectionState)
            if pc.connectionState == "connected":
                session.start()
            elif pc.connectionState in ("failed", "closed"):
                reason = "failed" if pc.connectionState == "failed" else "client_left"
                await self.close(session, reason)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and session.mic:
                shorten_audio_jitter_buffer(pc, track, self.cfg.server.audio_jitter_packets)
                session.read_microphone(track)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            session.attach_channel(channel)

        session.add_task(spawn(self._expire_unconnected(session), f"expire-{session.sid}"))

    async def _negotiate(self, session: Session, sdp: str, publish: bool) -> str:
        pc, sc = session.pc, self.cfg.server
        if publish:
            return await answer_offer(pc, sdp, sc, lambda: receive_microphone_only(pc, sdp))
        return await answer_offer(pc, sdp, sc, lambda: send_avatar(pc, session, sc))

    async def _expire_unconnected(self, session: Session) -> None:
        await self.clock.sleep_until(self.clock.now_ns() + round(CONNECT_TIMEOUT_S * NS_PER_S))
        if session.pc.connectionState != "connected" and not session.closed.is_set():
            log.info("session %s never connected: closed", session.sid)
            await self.close(session, "never_connected")

    # -- closing ------------------------------------------------------------------------------

    async def close(self, session: Session, reason: str = "stopped") -> None:
        try:
            await session.close(reason)
        finally:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        if self._open.pop(session.sid, None) is not None:
            if session.sid in self._heard:  # watchers hear the end of what they heard open
                self._heard.discard(session.sid)
                reason = session.reason or "stopped"
                if self.draining and reason == "client_left":  # it moved when told to
                    reason = "drained"
                for watcher in self.watchers:
                    watcher.closed(session, reason)
            self.slots.release()
            self.metrics.closed(session)
            self.metrics.faults.inc(session.engine.faults_total)
            spawn(self._give_back_memory(), "give-back-memory")

    async def _give_back_memory(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, give_back_memory)

    async def drain(self, timeout_s: float) -> None:
        """Graceful shutdown: no new sessions; the open ones are told (a ``shutdown`` message, a
        few at a time: each page opens a new session elsewhere, then leaves) and get
        ``timeout_s`` to finish before they are closed. A session its page closes meanwhile ends
        as ``drained``."""
        self.draining = self.metrics.collector.draining = True
        deadline = self.clock.now_ns() + round(timeout_s * NS_PER_S)
        told = list(self._open.values())
        gap = round(min(DRAIN_STAGGER_S, timeout_s / 2 / max(len(told), 1)) * NS_PER_S)
        for i, s in enumerate(told):  # staggered: their pages do not all move at once
            if i:
                await self.clock.sleep_until(self.clock.now_ns() + gap)
            left = max(deadline - self.clock.now_ns(), 0) / NS_PER_S
            s.send({"type": "shutdown", "within_s": round(left, 1)})
        step = NS_PER_S // 5
        while self._open and self.clock.now_ns() < deadline:
            await self.clock.sleep_until(self.clock.now_ns() + step)
        await self.close_all("drained")

    async def close_all(self, reason: str = "stopped") -> None:
        await asyncio.gather(*(self.close(s, reason) for s in list(self._open.values())))
