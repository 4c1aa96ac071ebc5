"""Engines from configuration (blocking: loads models; call it in an executor when serving)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

import cv2
from threadpoolctl import threadpool_limits

from avatar.backends.batching import BatchingBackend
from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock
from avatar.compose.renderers import load_gan_backend, load_renderer
from avatar.config import BatchConfig, Config, EngineConfig, MotionConfig, RenderConfig
from avatar.engine.engine import AvatarEngine
from avatar.face.store import load_avatar
from avatar.motion.channels import BATCH_AXES
from avatar.motion.runtime import load_motion_backend
from avatar.observe import NULL_OBSERVER, Observer
from avatar.render.base import Renderer
from avatar.server.sessions import EngineFactory


def build_engine(
    cfg: Config,
    clock: Clock,
    *,
    live: bool = False,
    realtime: bool = True,
    executor: Executor | None = None,
    observer: Observer = NULL_OBSERVER,
    renderer: Renderer | None = None,
    backend: InferenceBackend | None = None,
) -> AvatarEngine:
    """An engine for ``cfg.render.avatar`` with its own renderer and motion model state.

    ``live``: input from a microphone (late audio and frames are skipped to stay live);
    otherwise buffered input (a file, text-to-speech) plays out in full. A ``realtime`` engine
    feeds a video encoder (a session's track, the profile and capacity drivers): its frames
    carry their I420 planes, converted in the render hop. ``renderer`` and ``backend``: ones
    already loaded, used instead of loading the configured ones."""
    return AvatarEngine(
        backend or load_motion_backend(cfg.motion.for_input(live)),
        renderer or load_renderer(cfg.render), clock,
        cfg.engine, cfg.vad, cfg.motion.fps, live=live, realtime=realtime, executor=executor,
        observer=observer, idle_seed=cfg.render.idle_seed, i420=realtime,
    )  # fmt: skip


def one_thread_per_call() -> None:
    """OpenCV and BLAS run each call on one thread, in this whole process: live sessions
    already run side by side on the executor's threads (one per core), so a library's own pool
    inside a call (a 0.5 ms remap, a small matrix product) only adds hand-offs, and its workers
    spin while they wait. Measured on 2 cores (README, "Sessions per machine"): a talking
    session's CPU falls by about a sixth."""
    cv2.setNumThreads(1)
    threadpool_limits(1, user_api="blas")


def executor_workers(cfg: EngineConfig) -> int:
    """Executor threads for every session's work: ``engine.workers``, or the CPU count, plus
    with batching two per batch row (a session's motion and render calls each hold a thread
    while they wait for their batch: fewer threads would cap the batches, never deadlock)."""
    if cfg.workers:
        return cfg.workers
    cpus = os.cpu_count() or 2
    return cpus + (2 * cfg.batch.max_batch if cfg.batch.enabled else 0)


class Batchers:
    """With ``engine.batch.enabled``, one :class:`BatchingBackend` per model for every session
    (each session gets its own client); otherwise every session loads its own backend (the
    weights shared through :mod:`avatar.backends.onnxruntime`)."""

    def __init__(self, cfg: BatchConfig, clock: Clock) -> None:
        self.cfg, self.clock = cfg, clock
        self._shared: dict[str, BatchingBackend] = {}
        self._lock = threading.Lock()

    def get(
        self, key: str, load: Callable[[], InferenceBackend], axes: Mapping[str, int] | None = None
    ) -> InferenceBackend:
        """A session's backend for the model ``key`` names (``load`` loads it)."""
        if not self.cfg.enabled:
            return load()
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared[key] = BatchingBackend(
                    load(), self.clock, max_batch=self.cfg.max_batch,
                    max_wait_ms=self.cfg.max_wait_ms, batch_axes=axes,
                )  # fmt: skip
        return shared.client()

    def motion(self, cfg: MotionConfig) -> InferenceBackend:
        key = f"motion:{cfg.weights}:{cfg.precision}:{cfg.backend}:{cfg.threads}"
        return self.get(key, lambda: load_motion_backend(cfg), BATCH_AXES)

    def renderer(self, cfg: RenderConfig) -> Renderer:
        """The configured renderer; a GAN's generator goes through the batcher."""
        if cfg.renderer != "gan" or not self.cfg.enabled:
            return load_renderer(cfg)
        from avatar.render.gan import GanRenderer

        assets = load_avatar(cfg.avatar)
        key = (
            f"gan:{assets.folder or assets.name}:{cfg.gan_variant}:{cfg.precision}:"
            f"{cfg.backend}:{cfg.threads}"
        )
        return GanRenderer(assets, self.get(key, lambda: load_gan_backend(assets, cfg)), cfg.size)

    @property
    def shared(self) -> dict[str, BatchingBackend]:
        with self._lock:
            return dict(self._shared)

    def close(self) -> None:
        """Stop every batching worker."""
        with self._lock:
            shared, self._shared = list(self._shared.values()), {}
        for batcher in shared:
            batcher.close()


class SharedRenderers:
    """One warp renderer per avatar for every session: it is built once (its fields are the
    costly part) and drawing keeps no state, so sessions on several threads can share it. GAN
    renderers are built per session (their backend keeps IO bindings), sharing the model's
    weights through :mod:`avatar.backends.onnxruntime`, or its batching worker (``batchers``)."""

    def __init__(self, cfg: RenderConfig, batchers: Batchers | None = None) -> None:
        self.cfg = cfg
        self.batchers = batchers
        self._warp: dict[str, Renderer] = {}
        self._lock = threading.Lock()

    def get(self, avatar: str) -> Renderer:
        cfg = self.cfg.model_copy(update={"avatar": avatar})
        if cfg.renderer != "warp":
            return self.batchers.renderer(cfg) if self.batchers else load_renderer(cfg)
        with self._lock:
            renderer = self._warp.get(avatar)
            if renderer is None:
                renderer = self._warp[avatar] = load_renderer(cfg)
        return renderer


def engine_factory(cfg: Config, clock: Clock, executor: Executor | None) -> EngineFactory:
    """What the server calls (in its executor) to build a session's engine: its own motion
    state and pipeline, the model weights and warp renderers shared; with
    ``engine.batch.enabled`` the models' calls are batched across sessions (the executor needs
    :func:`executor_workers` threads)."""
    one_thread_per_call()
    batchers = Batchers(cfg.engine.batch, clock)
    renderers = SharedRenderers(cfg.render, batchers)

    def build(avatar: str, live: bool, observer: Observer) -> AvatarEngine:
        render = cfg.render.model_copy(update={"avatar": avatar})
        session_cfg = cfg.model_copy(update={"render": render})
        return build_engine(session_cfg, clock, live=live, executor=executor, observer=observer,
                            renderer=renderers.get(avatar),
                            backend=batchers.motion(cfg.motion.for_input(live)))  # fmt: skip

    return build
