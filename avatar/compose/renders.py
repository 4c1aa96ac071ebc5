"""Render jobs composed from the configuration (``renders``): who keeps the records, where inputs
and results live, who runs the jobs.

- No ``renders.redis`` (the embedded default): records in ``<store>/jobs``, jobs run by this
  process one at a time (:class:`~avatar.renders.queues.LocalQueue`).
- ``renders.redis``: records and the queue in Redis; ``avatar worker`` processes run the jobs
  (:func:`run_worker`), any number of them on any machines sharing that Redis and the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock, MonotonicClock, unix_time
from avatar.compose.offline import render_file
from avatar.compose.renderers import load_renderer
from avatar.config import Config
from avatar.errors import ConfigError
from avatar.motion.runtime import load_motion_backend
from avatar.render.base import Renderer
from avatar.render.video import Container
from avatar.renders.api import Renders
from avatar.renders.jobs import FolderBook, JobBook, RedisBook
from avatar.renders.queues import ArqQueue, JobQueue, LocalQueue, make_worker, redis_client
from avatar.renders.runner import JobRunner, RenderMetrics
from avatar.renders.stores import FolderStore, open_store
from avatar.server.gate import Gate
from avatar.server.routes import RendersFactory

log = logging.getLogger("avatar.renders")


def renders_part(cfg: Config, clock: Clock) -> RendersFactory:
    """The render routes for a role's gate and registry."""

    def build(gate: Gate, registry: CollectorRegistry) -> Renders:
        store = open_store(cfg.renders)
        book: JobBook
        queue: JobQueue
        if cfg.renders.redis:
            book = RedisBook(redis_client(cfg.renders.redis, patient=False), _keep_s(cfg))
            queue = ArqQueue(cfg.renders.redis)
        else:
            folder_book = FolderBook(_records_folder(store))
            runner = JobRunner(cfg, folder_book, store, RenderMetrics(registry), KeptModels(),
                               clock)  # fmt: skip
            book, queue = folder_book, LocalQueue(runner, folder_book)
        return Renders(cfg, gate, book, store, queue, registry, clock, unix_time)

    return build


MODELS_KEPT = 4  # avatars x renderers x sizes a worker keeps loaded


class KeptModels:
    """The jobs' :class:`~avatar.renders.runner.ClipRenderer`: ``avatar render``'s offline chain
    with the renderer and motion model loaded once per process (0.35-0.57 s each time
    otherwise: a third of a short job). Jobs run one at a time, so they share them safely; the
    streaming state lives in each job's engine."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[object, object], tuple[Renderer, InferenceBackend]] = {}

    def __call__(
        self, audio: Path, out: Path, cfg: Config, container: Container,
        on_frame: Callable[[int, int], None],
    ) -> None:  # fmt: skip
        renderer, backend = self._models(cfg)
        render_file(audio, out, cfg, progress=False, container=container, on_frame=on_frame,
                    renderer=renderer, backend=backend)  # fmt: skip

    def _models(self, cfg: Config) -> tuple[Renderer, InferenceBackend]:
        motion = cfg.motion.for_input(live=False)
        key = (cfg.render, motion)
        if key not in self._loaded:
            if len(self._loaded) >= MODELS_KEPT:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[key] = (load_renderer(cfg.render), load_motion_backend(motion))
        return self._loaded[key]


def run_worker(cfg: Config, metrics_port: int | None, drain_s: float) -> None:
    """``avatar worker``: run queued render jobs until SIGTERM (the running job may finish
    within ``drain_s``); Prometheus metrics on ``metrics_port``."""
    if not cfg.renders.redis:
        raise ConfigError("avatar worker needs a queue: --redis URL (or renders.redis)")
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    asyncio.run(_work(cfg, registry, drain_s))


async def _work(cfg: Config, registry: CollectorRegistry, drain_s: float) -> None:
    redis = redis_client(cfg.renders.redis, patient=True)
    book = RedisBook(redis, _keep_s(cfg))
    runner = JobRunner(cfg, book, open_store(cfg.renders), RenderMetrics(registry),
                       KeptModels(), MonotonicClock())  # fmt: skip
    worker = make_worker(cfg, runner, drain_s)
    print(f"avatar worker: jobs from {cfg.renders.redis}, results to {cfg.renders.store}",
          flush=True)  # fmt: skip
    try:
        await worker.main()
    finally:
        await worker.close()
        await redis.aclose()


def _keep_s(cfg: Config) -> float:
    return cfg.renders.keep_days * 86400


def _records_folder(store: object) -> Path:
    """Records beside a folder store's results; with S3 and no Redis, in ./renders."""
    return store.root if isinstance(store, FolderStore) else Path("renders")
