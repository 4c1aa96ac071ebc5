"""Engines from configuration (blocking: loads models; call it in an executor when serving)."""

from __future__ import annotations

import threading
from concurrent.futures import Executor

from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock
from avatar.compose.renderers import load_renderer
from avatar.config import Config, RenderConfig
from avatar.engine.engine import AvatarEngine
from avatar.motion.runtime import load_motion_backend
from avatar.observe import NULL_OBSERVER, Observer
from avatar.render.base import Renderer
from avatar.server.app import EngineFactory


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
    otherwise buffered input (a file, text-to-speech) plays out in full. ``renderer`` and
    ``backend``: ones already loaded, used instead of loading the configured ones."""
    return AvatarEngine(
        backend or load_motion_backend(cfg.motion), renderer or load_renderer(cfg.render), clock,
        cfg.engine, cfg.vad, cfg.motion.fps, live=live, realtime=realtime, executor=executor,
        observer=observer, idle_seed=cfg.render.idle_seed,
    )  # fmt: skip


class SharedRenderers:
    """One warp renderer per avatar for every session: it is built once (its fields are the
    costly part) and drawing keeps no state, so sessions on several threads can share it. GAN
    renderers are built per session (their backend keeps IO bindings), sharing the model's
    weights through :mod:`avatar.backends.onnxruntime`."""

    def __init__(self, cfg: RenderConfig) -> None:
        self.cfg = cfg
        self._warp: dict[str, Renderer] = {}
        self._lock = threading.Lock()

    def get(self, avatar: str) -> Renderer:
        cfg = self.cfg.model_copy(update={"avatar": avatar})
        if cfg.renderer != "warp":
            return load_renderer(cfg)
        with self._lock:
            renderer = self._warp.get(avatar)
            if renderer is None:
                renderer = self._warp[avatar] = load_renderer(cfg)
        return renderer


def engine_factory(cfg: Config, clock: Clock, executor: Executor | None) -> EngineFactory:
    """What the server calls (in its executor) to build a session's engine: its own motion
    state and pipeline, the model weights and warp renderers shared."""
    renderers = SharedRenderers(cfg.render)

    def build(avatar: str, live: bool, observer: Observer) -> AvatarEngine:
        render = cfg.render.model_copy(update={"avatar": avatar})
        session_cfg = cfg.model_copy(update={"render": render})
        return build_engine(session_cfg, clock, live=live, executor=executor, observer=observer,
                            renderer=renderers.get(avatar))  # fmt: skip

    return build
