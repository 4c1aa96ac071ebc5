"""A render job's record, and the book that keeps the records.

The record is one JSON document per job, written whole: by the API when the job is made or
cancelled while queued, by the runner as it goes (progress about twice a second). A cancel asked
while the job runs is a separate flag, so the runner's writes never lose it. Two books:
:class:`FolderBook` (one process: the embedded default) and :class:`RedisBook` (any number of
servers and workers; records expire after ``renders.keep_days``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from avatar.renders.request import RenderRequest

Status = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PREFIX = "avatar:render:"


class RenderJob(BaseModel):
    """One job. ``input_key`` names its audio in the store (None: text, spoken by the runner);
    ``result_key`` is where its video lands: named by the job id, so a job run twice (a worker
    that died mid-job) still leaves one object."""

    model_config = ConfigDict(extra="ignore")

    id: str
    request: RenderRequest
    input_key: str | None = None
    status: Status = "queued"
    frames: int = 0
    total: int = 0
    error: str | None = None
    tries: int = 0
    created_s: float
    started_s: float | None = None
    finished_s: float | None = None

    @property
    def result_key(self) -> str:
        return f"renders/{self.id}.{self.request.format}"

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public(self, result_url: str | None) -> dict[str, object]:
        """What ``GET /v1/renders/{id}`` answers."""
        return {
            "id": self.id, "status": self.status,
            "progress": {"frames": self.frames, "total": self.total},
            "error": self.error, "result_url": result_url if self.status == "done" else None,
            "tries": self.tries, "created_s": self.created_s, "started_s": self.started_s,
            "finished_s": self.finished_s,
            "request": self.request.model_dump(exclude_none=True, exclude={"webhook_url"}),
        }  # fmt: skip


class JobBook(Protocol):
    async def add(self, job: RenderJob) -> bool:
        """Keep a new record; False when a job with its id exists already."""

    async def get(self, job_id: str) -> RenderJob | None: ...

    async def put(self, job: RenderJob) -> None: ...

    async def ask_cancel(self, job_id: str) -> None:
        """Raise the job's cancel flag (the runner reads it)."""

    async def cancel_asked(self, job_id: str) -> bool: ...


class FolderBook:
    """Records as ``<folder>/jobs/<id>.json`` (replaced whole, atomically); cancel flags in
    memory: one process runs these jobs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "jobs"
        self._cancels: set[str] = set()
        self._lock = asyncio.Lock()

    async def add(self, job: RenderJob) -> bool:
        async with self._lock:
            if await asyncio.to_thread(self._path(job.id).exists):
                return False
            await self.put(job)
            return True

    async def get(self, job_id: str) -> RenderJob | None:
        path = self._path(job_id)
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            return None
        return RenderJob.model_validate_json(text)

    async def put(self, job: RenderJob) -> None:
        await asyncio.to_thread(self._write, job)

    async def ask_cancel(self, job_id: str) -> None:
        self._cancels.add(job_id)

    async def unfinished(self) -> list[str]:
        """Jobs queued or running when the process last stopped, oldest first."""

        def scan() -> list[RenderJob]:
            paths = self.folder.glob("*.json") if self.folder.is_dir() else []
            jobs = [RenderJob.model_validate_json(p.read_text()) for p in paths]
            return sorted((j for j in jobs if not j.final), key=lambda j: j.created_s)

        return [job.id for job in await asyncio.to_thread(scan)]

    async def cancel_asked(self, job_id: str) -> bool:
        return job_id in self._cancels

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _write(self, job: RenderJob) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{job.id}.{os.getpid()}.tmp"
        tmp.write_text(job.model_dump_json())
        os.replace(tmp, self._path(job.id))


class RedisBook:
    """Records as ``avatar:render:<id>`` strings, cancel flags as ``avatar:render:<id>:cancel``;
    both expire ``keep_s`` after their last write."""

    def __init__(self, redis: Redis, keep_s: float) -> None:
        self.redis, self.keep_s = redis, int(keep_s)

    async def add(self, job: RenderJob) -> bool:
        made = await self.redis.set(PREFIX + job.id, job.model_dump_json(), nx=True, ex=self.keep_s)
        return bool(made)

    async def get(self, job_id: str) -> RenderJob | None:
        text = await self.redis.get(PREFIX + job_id)
        return None if text is None else RenderJob.model_validate_json(text)

    async def put(self, job: RenderJob) -> None:
        await self.redis.set(PREFIX + job.id, job.model_dump_json(), ex=self.keep_s)

    async def ask_cancel(self, job_id: str) -> None:
        await self.redis.set(f"{PREFIX}{job_id}:cancel", b"1", ex=self.keep_s)

    async def cancel_asked(self, job_id: str) -> bool:
        return bool(await self.redis.exists(f"{PREFIX}{job_id}:cancel"))
