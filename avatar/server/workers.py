"""The worker processes of ``avatar serve --workers N``: started, watched, restarted, stopped.

Each worker is ``avatar serve --worker-of FRONT_PID`` (see :func:`worker_command`): a whole
:class:`~avatar.server.app.AvatarServer` with its own models, executor and aiortc, listening on
a unix socket in a private temporary folder (mode 0700) that only the front talks to. Its
configuration is the front's with what the front already does taken out (tokens, per-client
rates: a worker sees a single client, the front) and its own slice of ``server.udp_ports``. A
worker whose front is gone stops by itself (it checks its parent once a second).

A worker that exits while the front runs is logged; its sessions are gone (their sockets through
the front close); the front routes nothing to it and starts a new one (after 1 s, doubling up to
30 s while new ones keep failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from avatar.clock import Clock, sleep_for
from avatar.config import Config, ServerConfig
from avatar.errors import AvatarError, ConfigError
from avatar.tasks import cancel, spawn, within
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.server")
START_TIMEOUT_S = 120.0  # imports and model loading, several workers at once on a busy machine
ASK_TIMEOUT_S = 2.0  # health, readiness and metrics of one worker
RESTART_BACKOFF_S = (1.0, 30.0)
OPEN = 1e9  # rates the front enforces per client; a worker's limiter sees only the front


def worker_count(cfg: ServerConfig) -> int:
    """``server.workers``, with ``auto`` = the CPUs this process may run on."""
    if cfg.workers != "auto":
        return int(cfg.workers)
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def port_slice(ports: tuple[int, int] | None, n: int, index: int) -> tuple[int, int] | None:
    """Worker ``index``'s share of ``server.udp_ports`` (contiguous; the last takes the rest)."""
    if ports is None:
        return None
    lo, hi = ports
    size = (hi - lo + 1) // n
    if size < 1:
        raise ConfigError(f"server.udp_ports {lo}-{hi} has fewer ports than server.workers "
                          f"({n}): each worker needs its own")  # fmt: skip
    start = lo + index * size
    return (start, hi if index == n - 1 else start + size - 1)


def worker_config(cfg: Config, n: int, index: int) -> Config:
    """What worker ``index`` of ``n`` runs: see the module docstring."""
    sc = cfg.server
    limits = sc.limits.model_copy(update={
        "offers_per_minute": OPEN, "offer_burst": int(OPEN), "sockets_per_minute": OPEN,
    })  # fmt: skip
    auth = sc.auth.model_copy(update={"require_token": "never"})
    server = sc.model_copy(update={
        "host": "127.0.0.1", "workers": 1, "udp_ports": port_slice(sc.udp_ports, n, index),
        "auth": auth, "limits": limits,
    })  # fmt: skip
    threads = cfg.engine.workers or max(2, (os.cpu_count() or 2) // n)  # no oversubscription
    engine = cfg.engine.model_copy(update={"workers": threads})
    return cfg.model_copy(update={"server": server, "engine": engine})


def worker_command(config: Path, index: int, socket: Path, verbose: bool) -> list[str]:
    return [sys.executable, "-m", "avatar.cli", *(["-v"] if verbose else []), "serve",
            "--config", str(config), "--worker-of", str(os.getpid()),
            "--worker-index", str(index), "--worker-socket", str(socket)]  # fmt: skip


@dataclass(slots=True)
class Worker:
    """One worker process as the front sees it."""

    index: int
    socket: Path
    http: aiohttp.ClientSession
    proc: asyncio.subprocess.Process | None = None
    up: bool = False  # started and answering: offers and sockets may go to it
    restarts: int = 0
    pending: int = 0  # offers sent to it and not answered yet (counted as load)
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def owns(self, sid: str) -> bool:
        return sid.startswith(f"w{self.index}.")


class WorkerPool:
    """``n`` workers for the front; see the module docstring."""

    def __init__(self, cfg: Config, n: int, clock: Clock) -> None:
        self.cfg, self.n, self.clock = cfg, n, clock
        configs = [worker_config(cfg, n, i) for i in range(n)]  # a ConfigError before anything
        self.dir = Path(tempfile.mkdtemp(prefix="avatar-workers-"))  # 0700
        self.verbose = logging.getLogger().isEnabledFor(logging.INFO)
        self.stopping = False
        self.workers: list[Worker] = []
        for i, config in enumerate(configs):
            (self.dir / f"worker-{i}.json").write_text(config.model_dump_json())
            sock = self.dir / f"w{i}.sock"
            http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
            self.workers.append(Worker(i, sock, http))

    async def start(self) -> None:
        """Start every worker; returns when all answer (:class:`AvatarError` if one fails)."""
        await asyncio.gather(*(self._launch(w) for w in self.workers))
        for w in self.workers:
            w.watcher = spawn(self._watch(w), f"watch-worker-{w.index}")

    async def _launch(self, w: Worker) -> None:
        w.socket.unlink(missing_ok=True)
        cmd = worker_command(self.dir / f"worker-{w.index}.json", w.index, w.socket, self.verbose)
        # its own session: a Ctrl-C in the terminal reaches the front only, which drains them
        w.proc = await asyncio.create_subprocess_exec(*cmd, start_new_session=True)
        deadline = self.clock.now_ns() + round(START_TIMEOUT_S * NS_PER_S)
        while self.clock.now_ns() < deadline:
            if w.proc.returncode is not None:
                raise AvatarError(f"worker {w.index} exited ({w.proc.returncode}) while starting")
            if (await self.ask(w, "/healthz", starting=True))[0] == 200:
                w.up = True
                log.info("worker %d ready (pid %d)", w.index, w.proc.pid)
                return
            await sleep_for(self.clock, 0.1)
        w.proc.kill()
        raise AvatarError(f"worker {w.index} did not answer within {START_TIMEOUT_S:.0f} s")

    async def _watch(self, w: Worker) -> None:
        backoff = RESTART_BACKOFF_S[0]
        while not self.stopping:
            assert w.proc is not None
            code = await w.proc.wait()
            w.up = False
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited (%s): its sessions are gone; starting a new one "
                      "in %.0f s", w.index, w.proc.pid, code, backoff)  # fmt: skip
            await sleep_for(self.clock, backoff)
            if self.stopping:
                return
            w.restarts += 1
            try:
                await self._launch(w)
                backoff = RESTART_BACKOFF_S[0]
            except AvatarError as exc:
                log.error("%s", exc)
                backoff = min(2 * backoff, RESTART_BACKOFF_S[1])

    def owner(self, sid: str) -> Worker | None:
        """The running worker that holds session ``sid`` (by its ``w<index>.`` prefix)."""
        return next((w for w in self.workers if w.up and w.owns(sid)), None)

    async def ask(self, w: Worker, path: str, starting: bool = False) -> tuple[int, Any]:
        """GET ``path`` from a worker: (status, JSON or text); (0, None) if it does not answer."""
        if not (w.up or starting):
            return 0, None
        try:
            timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
            async with w.http.get(f"http://worker{path}", timeout=timeout) as r:
                if r.content_type == "application/json":
                    return r.status, await r.json()
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def ask_all(self, path: str) -> list[tuple[Worker, int, Any]]:
        answers = await asyncio.gather(*(self.ask(w, path) for w in self.workers))
        return [(w, status, body) for w, (status, body) in zip(self.workers, answers, strict=True)]

    async def by_load(self) -> list[Worker]:
        """Running workers with room, fewest sessions first (offers in flight count)."""
        ready = []
        for w, status, body in await self.ask_all("/readyz"):
            if status == 200 and isinstance(body, dict):
                ready.append((int(body.get("sessions", 0)) + w.pending, w.index, w))
        return [w for *_, w in sorted(ready, key=lambda r: r[:2])]

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each drains its sessions), SIGKILL what is left after
        ``timeout_s``, then forget them. Idempotent."""
        self.stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        if not await within(self.clock, timeout_s, *(p.wait() for p in procs)):
            log.warning("workers still running after %.0f s: killed", timeout_s)
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        await cancel(*(w.watcher for w in self.workers))
        for w in self.workers:
            w.up = False
            await w.http.close()
        shutil.rmtree(self.dir, ignore_errors=True)


async def watch_parent(parent_pid: int, clock: Clock) -> None:
    """In a worker: returns once the front that started it has gone (killed, or stopped
    without stopping its workers)."""
    while os.getppid() == parent_pid:
        await sleep_for(clock, 1.0)
    log.warning("the front (pid %d) is gone: stopping", parent_pid)
