"""Build an engine from configuration (blocking: loads models; call it in an executor)."""

from __future__ import annotations

from concurrent.futures import Executor

from avatar.clock import Clock
from avatar.config import Config
from avatar.engine.analyzer import Analyzer
from avatar.engine.engine import AvatarEngine
from avatar.motion.runtime import load_motion_backend
from avatar.render.factory import load_renderer

OUTPUT_RATE = 48000


def build_engine(
    cfg: Config,
    clock: Clock,
    *,
    realtime: bool = True,
    max_backlog: int | None = None,
    executor: Executor | None = None,
    profile: bool = False,
) -> AvatarEngine:
    """An engine for ``cfg.render.avatar`` with its own renderer and motion model state."""
    renderer = load_renderer(cfg.render)
    backend = load_motion_backend(cfg.motion)
    analyzer = Analyzer(
        backend, cfg.vad, cfg.motion.fps, OUTPUT_RATE,
        cfg.engine.preroll_ms, cfg.engine.sleep_after_ms,
    )  # fmt: skip
    return AvatarEngine(
        analyzer, renderer, clock, cfg.engine, realtime=realtime, max_backlog=max_backlog,
        executor=executor, idle_seed=cfg.render.idle_seed, profile=profile,
    )  # fmt: skip
