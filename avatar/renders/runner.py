"""One render job, start to end, on the same chain as ``avatar render``.

:class:`JobRunner` reads the job's record, speaks its text (:mod:`avatar.data.tts`) or fetches
its audio from the store, renders in a thread (:class:`ClipRenderer`: the
engine's offline chain, every frame rendered at the job's fps and size), puts the result under
the job's own key and writes the record's end; a webhook is called in the background. While it
renders it writes progress about twice a second (best effort: a record store that hiccups does
not stop the render), reads the cancel flag and keeps the job's time limit; the render thread
stops at its next frame when told.

Delivery is at-least-once (a worker that dies mid-job: the queue runs the job again), made safe
here: a job whose result is already stored is only marked done, and a job tried
``renders.max_tries`` times is failed with the reason (its dead-letter state) instead of run.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from avatar.clock import Clock, MonotonicClock, unix_time
from avatar.config import Config
from avatar.data.tts import speak, write_wave
from avatar.errors import AvatarError
from avatar.render.video import Container
from avatar.renders.jobs import JobBook, RenderJob
from avatar.renders.stores import ResultStore
from avatar.renders.webhook import notify
from avatar.tasks import spawn
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.renders")
TICK_S = 0.5  # progress, cancel and time limit are looked at this often
Heartbeat = Callable[[], Awaitable[None]]  # the queue's "still working on it"
JOB_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


class ClipRenderer(Protocol):
    """Speech file -> video file with the job's configuration, in the calling thread; told
    ``on_frame(frames written, frames expected)`` after each frame (it may raise to stop).
    The composition root gives the offline chain of ``avatar render``
    (:class:`avatar.compose.renders.KeptModels`)."""

    def __call__(
        self, audio: Path, out: Path, cfg: Config, container: Container,
        on_frame: Callable[[int, int], None],
    ) -> None: ...  # fmt: skip


class JobStopped(Exception):
    """The render thread was told to stop (cancel or time limit)."""


class RenderMetrics:
    """Per-job time and outcome, in the registry of the process that runs the jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram("avatar_render_job_seconds", "wall time of one job try",
                                 ["stage"], buckets=JOB_BUCKETS, registry=registry)  # fmt: skip
        self.jobs = Counter("avatar_render_jobs", "jobs ended, by status", ["status"],
                            registry=registry)  # fmt: skip
        self.audio = Counter("avatar_render_audio_seconds", "seconds of speech rendered",
                             registry=registry)  # fmt: skip


class JobRunner:
    def __init__(
        self,
        cfg: Config,
        book: JobBook,
        store: ResultStore,
        metrics: RenderMetrics,
        render: ClipRenderer,
        clock: Clock | None = None,
        wall: Callable[[], float] = unix_time,
    ) -> None:
        self.cfg, self.book, self.store, self.metrics = cfg, book, store, metrics
        self.render, self.clock, self.wall = render, clock or MonotonicClock(), wall

    async def run(self, job_id: str, heartbeat: Heartbeat | None = None) -> None:
        """Run one try of ``job_id`` (nothing when it has ended or is unknown)."""
        job = await self.book.get(job_id)
        if job is None or job.final:
            return
        if await self.book.cancel_asked(job_id):
            await self._end(job, "cancelled", None)
            return
        if await asyncio.to_thread(self.store.exists, job.result_key):
            await self._end(job, "done", None)  # stored by a try that died before its record
            return
        if job.tries >= self.cfg.renders.max_tries:
            await self._end(job, "failed", f"gave up after {job.tries} tries: the worker "
                            "running it stopped each time (killed, or out of memory?)")  # fmt: skip
            return
        job = job.model_copy(update={"status": "running", "tries": job.tries + 1,
                                     "started_s": self.wall(), "error": None})  # fmt: skip
        await self.book.put(job)
        await self._try(job, heartbeat)

    async def _try(self, job: RenderJob, heartbeat: Heartbeat | None) -> None:
        progress = _Progress()
        with tempfile.TemporaryDirectory(prefix="avatar-render-") as tmp:
            work = asyncio.create_task(asyncio.to_thread(self._render, job, Path(tmp), progress))
            try:
                outcome = await self._watch(job, work, progress, heartbeat)
            except asyncio.CancelledError:  # the process stops: the thread stops too
                progress.stop.set()
                await asyncio.wait([work])
                raise
            if outcome is None:
                try:
                    result = work.result()
                    start = self.clock.now_ns()
                    await asyncio.to_thread(self.store.put, job.result_key, result)
                    self.metrics.seconds.labels("store").observe(self._since_s(start))
                    outcome = ("done", None)
                except JobStopped:
                    outcome = ("cancelled", None)
                except AvatarError as e:
                    outcome = ("failed", str(e))
                except Exception as e:
                    log.exception("render job %s failed", job.id)
                    outcome = ("failed", f"internal error ({type(e).__name__})")
        done = outcome[0] == "done"  # then the total is what was written, not the estimate
        total = progress.frames if done else progress.total
        await self._end(job.model_copy(update={"frames": progress.frames, "total": total}),
                        *outcome)  # fmt: skip

    async def _watch(
        self, job: RenderJob, work: asyncio.Task[Path], progress: _Progress,
        heartbeat: Heartbeat | None,
    ) -> tuple[str, str | None] | None:  # fmt: skip
        """Until ``work`` ends: progress, cancel, time limit. An outcome when it was stopped."""
        limit_ns = self.clock.now_ns() + int(self.cfg.renders.job_timeout_s * 1e9)
        outcome: tuple[str, str | None] | None = None
        while not work.done():
            await asyncio.wait([work], timeout=TICK_S)
            if heartbeat is not None:
                await heartbeat()
            if outcome is None and await self.book.cancel_asked(job.id):
                outcome = ("cancelled", None)
            elif outcome is None and self.clock.now_ns() > limit_ns:
                timeout = self.cfg.renders.job_timeout_s
                outcome = ("failed", f"timed out after {timeout:g} s (renders.job_timeout_s)")
            if outcome is not None:
                progress.stop.set()
            elif progress.frames:
                await self._progress(job, progress)
        return outcome

    async def _progress(self, job: RenderJob, progress: _Progress) -> None:
        try:
            await self.book.put(job.model_copy(update={"frames": progress.frames,
                                                       "total": progress.total}))  # fmt: skip
        except Exception as e:  # the next tick writes it again
            log.warning("render job %s: progress not written: %s", job.id, e)

    def _render(self, job: RenderJob, tmp: Path, progress: _Progress) -> Path:
        """In a thread: the job's speech, then its video; returns the video's path."""
        req = job.request
        start = self.clock.now_ns()
        audio = tmp / "input"
        if job.input_key is None:
            assert req.text is not None
            speech = speak(req.text, req.voice or "slt", self.cfg.renders.max_text_chars)
            write_wave(audio, speech.audio, speech.rate)
        else:
            self.store.get(job.input_key, audio)
        self.metrics.seconds.labels("input").observe(self._since_s(start))
        start = self.clock.now_ns()
        out = tmp / f"result.{req.format}"
        self.render(audio, out, job_config(self.cfg, job), req.format, progress.update)
        self.metrics.seconds.labels("render").observe(self._since_s(start))
        return out

    def _since_s(self, start_ns: int) -> float:
        return (self.clock.now_ns() - start_ns) / NS_PER_S

    async def _end(self, job: RenderJob, status: str, error: str | None) -> None:
        ended = job.model_copy(update={"status": status, "error": error,
                                       "finished_s": self.wall()})  # fmt: skip
        await self.book.put(ended)
        self.metrics.jobs.labels(status).inc()
        took = ended.finished_s - ended.started_s if ended.finished_s and ended.started_s else 0
        if status == "done":
            self.metrics.seconds.labels("job").observe(took)
            self.metrics.audio.inc(job.frames / job.request.fps)
        log.info("render job %s: %s after %.1f s, try %d, %d frames%s", job.id, status, took,
                 job.tries, job.frames, f" ({error})" if error else "")  # fmt: skip
        if job.request.webhook_url:
            url = None
            if status == "done":  # a presigned URL, or this server's path for it
                url = await asyncio.to_thread(self.store.url, job.result_key)
                url = url or f"/v1/renders/{job.id}/result"
            spawn(notify(job.request.webhook_url, ended.public(url), self.cfg.renders, self.wall),
                  f"webhook-{job.id}")  # fmt: skip


class _Progress:
    """Frames written so far, from the render thread; ``stop`` is set to stop it."""

    def __init__(self) -> None:
        self.frames = self.total = 0
        self.stop = threading.Event()

    def update(self, frames: int, total: int) -> None:
        self.frames, self.total = frames, total
        if self.stop.is_set():
            raise JobStopped


def job_config(cfg: Config, job: RenderJob) -> Config:
    """The configuration a job renders with: its avatar, renderer, fps and size (the renderer
    draws at that size, above the portrait's own too)."""
    req = job.request
    overrides: dict[str, object] = {}
    if req.avatar:
        overrides["avatar"] = req.avatar
    if req.renderer:
        overrides["renderer"] = req.renderer
    if req.size:
        overrides["size"] = req.size
    motion = cfg.motion.model_copy(update={"fps": req.fps})
    render = cfg.render.model_copy(update=overrides)
    return cfg.model_copy(update={"motion": motion, "render": render})
