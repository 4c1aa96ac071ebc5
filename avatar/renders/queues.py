"""Who runs render jobs: this process (:class:`LocalQueue`, the embedded default) or
``avatar worker`` processes through arq on Redis (:class:`ArqQueue`, :func:`run_worker`).

Why arq: it is asyncio like the rest of the server (RQ forks a process per job and is
synchronous; Celery brings a broker abstraction, its own worker pool and far more than one queue
needs), its jobs live in Redis alone, an id makes a submission unique (``_job_id``), and a job
whose worker died is run again. Two things are added to it here:

- **Fast retry of a dead worker's job.** arq marks a running job with an ``in-progress`` key that
  expires ``job_timeout + 10`` s after the start (a killed worker's job waits that long). Workers
  here set that expiry to :data:`HEARTBEAT_EXPIRY_S` and refresh it while the job runs, so a
  killed worker's job is picked up again within seconds, whatever the job's length. The key's
  prefix is arq's (``arq.constants.in_progress_key_prefix``), checked at import.
- **Survives a Redis restart.** Every Redis command retries with back-off for about 30 s
  (:func:`redis_settings`); with Redis' append-only file on (``appendonly yes``,
  deploy/k8s/redis.yaml) no accepted job is lost (docs/renders.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Retry as RetryJob
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from avatar.config import Config
from avatar.renders.jobs import FolderBook
from avatar.renders.runner import JobRunner
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.renders")
QUEUE = "avatar:renders:queue"
HEARTBEAT_EXPIRY_S = 10.0  # a dead worker's job is run again this long after its last beat
assert in_progress_key_prefix == "arq:in-progress:", "arq changed its in-progress key"


class JobQueue(Protocol):
    async def start(self) -> None: ...

    async def submit(self, job_id: str) -> None: ...

    async def depth(self) -> int:
        """Jobs waiting or running."""

    async def stop(self) -> None: ...


class LocalQueue:
    """Jobs run one at a time by this process, in submission order. Jobs still queued or
    running when the process stopped are run again when it starts (their records say so)."""

    def __init__(self, runner: JobRunner, book: FolderBook) -> None:
        self.runner, self.book = runner, book
        self._jobs: asyncio.Queue[str] = asyncio.Queue()
        self._running = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for job_id in await self.book.unfinished():
            self._jobs.put_nowait(job_id)
        self._task = spawn(self._loop(), "render-jobs")

    async def submit(self, job_id: str) -> None:
        self._jobs.put_nowait(job_id)

    async def depth(self) -> int:
        return self._jobs.qsize() + self._running

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)

    async def _loop(self) -> None:
        while True:
            job_id = await self._jobs.get()
            self._running = 1
            try:
                await self.runner.run(job_id)
            except Exception:
                log.exception("render job %s: the runner failed", job_id)
            finally:
                self._running = 0


class ArqQueue:
    """Submission to the workers' queue in Redis. A Redis that is away when the server starts
    does not stop it: the live path serves, submissions get 503 until Redis answers."""

    def __init__(self, url: str) -> None:
        self.settings = redis_settings(url, patient=False)
        self.pool: ArqRedis | None = None

    async def start(self) -> None:
        try:
            await self._pool()
        except (RedisError, OSError) as e:
            log.warning("render queue: Redis does not answer yet (%s); jobs get 503 until it does",
                        e)  # fmt: skip

    async def submit(self, job_id: str) -> None:
        pool = await self._pool()
        await pool.enqueue_job("render", job_id, _job_id=job_id, _queue_name=QUEUE)

    async def depth(self) -> int:
        return int(await (await self._pool()).zcard(QUEUE))

    async def _pool(self) -> ArqRedis:
        if self.pool is None:
            self.pool = await create_pool(self.settings, default_queue_name=QUEUE)
        return self.pool

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


RETRY_ON: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError, OSError]


def _retry(patient: bool) -> Retry:
    """``patient`` (workers): commands ride out a Redis restart (~30 s of back-off); otherwise
    (the API) a dead Redis is an error within ~2 s, answered as 503."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40 if patient else 2)


def redis_client(url: str, patient: bool) -> Redis:
    """A client for ``url`` (job records), retrying as :func:`_retry` says."""
    return Redis.from_url(url, socket_connect_timeout=1.0,
                          socket_timeout=None if patient else 2.0,
                          retry=_retry(patient), retry_on_error=RETRY_ON)  # fmt: skip


def redis_settings(url: str, patient: bool) -> RedisSettings:
    """arq's settings for ``url`` (the queue), retrying as :func:`_retry` says."""
    settings = RedisSettings.from_dsn(url)
    settings.retry, settings.retry_on_error = _retry(patient), RETRY_ON
    settings.conn_timeout = 1
    settings.conn_retries, settings.conn_retry_delay = (30, 1) if patient else (0, 0)
    return settings


async def _render(ctx: dict[str, Any], job_id: str) -> None:
    """The arq function: one try of one job, its in-progress key kept alive while it runs."""
    runner: JobRunner = ctx["runner"]
    redis: ArqRedis = ctx["redis"]

    async def heartbeat() -> None:
        try:
            await redis.pexpire(in_progress_key_prefix + job_id, int(HEARTBEAT_EXPIRY_S * 1000))
        except RedisError as e:  # Redis away for long: the job may run twice, stored once
            log.warning("render job %s: heartbeat not written: %s", job_id, e)

    try:
        await runner.run(job_id, heartbeat)
    except RedisError as e:  # its record could not be written: run it again (arq's tries)
        log.warning("render job %s: Redis failed (%s); it runs again in 5 s", job_id, e)
        raise RetryJob(defer=5) from e


def make_worker(cfg: Config, runner: JobRunner, drain_s: float = 30.0) -> Worker:
    """An arq worker for ``avatar worker``: one job at a time (a render uses a core or more);
    SIGTERM lets the running job finish for ``drain_s``, then it is run again elsewhere."""
    rc = cfg.renders
    # arq's own tries and limit sit above ours: the runner writes the dead-letter record itself
    render = func(_render, name="render", max_tries=rc.max_tries + 1,
                  timeout=rc.job_timeout_s + 60)  # fmt: skip
    worker = Worker(
        functions=[render], redis_settings=redis_settings(rc.redis, True), queue_name=QUEUE,
        max_jobs=1, poll_delay=0.2, keep_result=3600, job_completion_wait=int(drain_s),
        ctx={"runner": runner},
    )  # fmt: skip
    worker.in_progress_timeout_s = HEARTBEAT_EXPIRY_S
    return worker
