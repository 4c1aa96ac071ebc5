"""The render routes of ``avatar serve`` (docs/renders.md), behind the same gate as the live path.

- ``POST /v1/renders``: JSON ``{text | audio_url, avatar, renderer, size, fps, voice, format,
  webhook_url}`` or multipart (an ``audio`` file and the same fields) -> 202 ``{id, status,
  status_url}``. An ``Idempotency-Key`` header makes a retried submission the same job.
- ``GET /v1/renders/{id}``: status, progress (frames done / total), error, ``result_url``.
- ``DELETE /v1/renders/{id}``: cancel (a queued job at once, a running one at its next frame).
- ``GET /v1/renders/{id}/result``: the video (the folder store), or a redirect to its presigned
  URL (S3).
- ``GET /v1/render-options``: avatars, voices, frame rates, formats, the largest size.

Every refusal is a 4xx before anything is stored or queued; a full queue is 503 + Retry-After,
as is a Redis that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from aiohttp import BodyPartReader, web
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from avatar.clock import Clock, sleep_for
from avatar.config import Config
from avatar.data.tts import installed_voices
from avatar.errors import RequestError
from avatar.face.store import builtin_names
from avatar.renders.inputs import check_audio, fetch_audio, save_upload
from avatar.renders.jobs import JobBook, RenderJob
from avatar.renders.queues import JobQueue
from avatar.renders.request import FPS_CHOICES, check_request, parse_request
from avatar.renders.stores import ResultStore
from avatar.renders.webhook import check_url, webhook_secret
from avatar.server.gate import Gate
from avatar.tasks import cancel, spawn

log = logging.getLogger("avatar.renders")
DEPTH_EVERY_S = 2.0
FULL_RETRY_S = 30


class Renders:
    """The render routes; ``queue`` runs the jobs (here or in workers), ``book`` keeps their
    records, ``store`` their inputs and results."""

    def __init__(
        self, cfg: Config, gate: Gate, book: JobBook, store: ResultStore, queue: JobQueue,
        registry: CollectorRegistry, clock: Clock, wall: Callable[[], float],
    ) -> None:  # fmt: skip
        self.cfg, self.gate, self.book, self.store, self.queue = cfg, gate, book, store, queue
        self.clock, self.wall = clock, wall
        self.depth = Gauge("avatar_render_queue_jobs", "render jobs waiting or running",
                           registry=registry)  # fmt: skip
        self.submitted = Counter("avatar_render_submissions", "POST /v1/renders by result",
                                 ["result"], registry=registry)  # fmt: skip
        self._refresh: asyncio.Task[None] | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/renders", self.submit)
        router.add_route("OPTIONS", "/v1/renders", self.gate.preflight)
        router.add_get("/v1/render-options", self.options)
        router.add_get("/v1/renders/{id}", self.status)
        router.add_delete("/v1/renders/{id}", self.cancel)
        router.add_route("OPTIONS", "/v1/renders/{id}", self.gate.preflight)
        router.add_get("/v1/renders/{id}/result", self.result)

    async def start(self, app: web.Application) -> None:
        await self.queue.start()
        self._refresh = spawn(self._refresh_depth(), "render-queue-depth")

    async def stop(self, app: web.Application) -> None:
        if self._refresh is not None:
            await cancel(self._refresh)
        await self.queue.stop()

    # -- routes ------------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        self.gate.admit_job(request)
        try:
            return await self._submit(request)
        except RequestError as e:
            self.submitted.labels(str(e.status)).inc()
            raise
        except (RedisError, OSError) as e:
            self.submitted.labels("503").inc()
            log.warning("render submission: the job queue did not answer: %s", e)
            raise RequestError("the job queue is unavailable; retry shortly", 503,
                               retry_after_s=5) from None  # fmt: skip

    async def status(self, request: web.Request) -> web.Response:
        self.gate.authenticate(request)
        job = await self._job(request)
        return web.json_response(job.public(await self._result_url(job)))

    async def cancel(self, request: web.Request) -> web.Response:
        self.gate.authenticate(request)
        job = await self._job(request)
        if job.final:
            raise RequestError(f"job {job.id} has ended ({job.status}): nothing to cancel", 409)
        await self.book.ask_cancel(job.id)
        if job.status == "queued":  # the runner will skip it; say so now
            job = job.model_copy(update={"status": "cancelled", "finished_s": self.wall()})
            await self.book.put(job)
        return web.json_response(job.public(None))

    async def result(self, request: web.Request) -> web.StreamResponse:
        self.gate.authenticate(request)
        job = await self._job(request)
        if job.status != "done":
            raise RequestError(f"job {job.id} has no result ({job.status})", 409)
        path = await asyncio.to_thread(self.store.local_path, job.result_key)
        if path is not None:
            name = f"{job.id}.{job.request.format}"
            return web.FileResponse(path, headers={
                "Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip
        url = await asyncio.to_thread(self.store.url, job.result_key)
        if url is None:
            raise RequestError(f"job {job.id}: its result is gone from the store", 410)
        raise web.HTTPFound(url)

    async def options(self, request: web.Request) -> web.Response:
        self.gate.authenticate(request)
        rc = self.cfg.renders
        return web.json_response({
            "avatars": builtin_names(), "default_avatar": self.cfg.render.avatar,
            "renderers": ["warp", "gan"], "voices": await asyncio.to_thread(installed_voices),
            "fps": list(FPS_CHOICES), "formats": ["mp4", "webm"],
            "max_size": rc.max_size, "max_text_chars": rc.max_text_chars,
        })  # fmt: skip

    # -- parts -------------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        rc = self.cfg.renders
        if await self.queue.depth() >= rc.max_queued:
            raise RequestError(f"{rc.max_queued} jobs are queued; retry later", 503,
                               retry_after_s=FULL_RETRY_S)  # fmt: skip
        job_id = _job_id(request.headers.get("Idempotency-Key"))
        existing = await self.book.get(job_id)
        if existing is not None:  # the same submission again: the same job
            return self._accepted(existing, 200)
        with tempfile.TemporaryDirectory(prefix="avatar-upload-") as tmp:
            audio = Path(tmp) / "audio"
            fields, uploaded = await self._read(request, audio)
            req = parse_request(fields)
            avatar = await asyncio.to_thread(  # festival and the avatar folders: not on the loop
                check_request, req, rc, uploaded, self.cfg.render.avatar)  # fmt: skip
            req = req.model_copy(update={"avatar": avatar})
            if req.webhook_url is not None:
                await _check_webhook(req.webhook_url, self.cfg)
            if req.audio_url is not None:
                await fetch_audio(req.audio_url, audio, rc)
            input_key = None
            if req.text is None:
                await check_audio(audio, rc, "audio_url" if req.audio_url else "the upload")
                input_key = f"inputs/{job_id}"
                await asyncio.to_thread(self.store.put, input_key, audio)
        job = RenderJob(id=job_id, request=req, input_key=input_key, created_s=self.wall())
        if not await self.book.add(job):
            return self._accepted(await self._job_by_id(job_id), 200)
        try:
            await self.queue.submit(job_id)
        except Exception:  # no record may say "queued" for a job no queue holds
            failed = job.model_copy(update={"status": "failed", "error": "not queued"})
            with contextlib.suppress(Exception):
                await self.book.put(failed)
            raise
        self.depth.inc()
        self.submitted.labels("202").inc()
        return self._accepted(job, 202)

    async def _read(self, request: web.Request, audio: Path) -> tuple[dict[str, object], bool]:
        """The request's fields, and whether an audio file was uploaded into ``audio``."""
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except web.HTTPRequestEntityTooLarge:
                kb = self.cfg.server.limits.max_body_kb
                raise RequestError(f"the JSON body is over {kb} KB (server.limits.max_body_kb)",
                                   413) from None  # fmt: skip
            except ValueError:
                raise RequestError("the body is not JSON", 400) from None
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object", 400)
            return body, False
        if request.content_type == "multipart/form-data":
            return await self._read_multipart(request, audio)
        raise RequestError("POST /v1/renders takes application/json or multipart/form-data", 415)

    async def _read_multipart(
        self, request: web.Request, audio: Path
    ) -> tuple[dict[str, object], bool]:
        rc, limit = self.cfg.renders, self.cfg.server.limits.max_body_kb << 10
        if (request.content_length or 0) > rc.max_audio_mb * (1 << 20) + limit:
            raise RequestError(f"the upload is over {rc.max_audio_mb:g} MB (renders.max_audio_mb)",
                               413)  # fmt: skip
        fields: dict[str, object] = {}
        uploaded = False
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise RequestError("multipart: nested or unnamed parts are not read", 400)
            if part.name == "audio":
                await save_upload(part, audio, rc)
                uploaded = True
                continue
            value = await part.read(decode=True)
            if len(value) > limit:
                raise RequestError(f"multipart field {part.name[:40]!r} is too large", 413)
            fields[part.name] = value.decode("utf-8", "replace")  # pydantic parses numbers
        return fields, uploaded

    def _accepted(self, job: RenderJob, status: int) -> web.Response:
        url = f"/v1/renders/{job.id}"
        body = {"id": job.id, "status": job.status, "status_url": url}
        return web.json_response(body, status=status, headers={"Location": url})

    async def _job(self, request: web.Request) -> RenderJob:
        return await self._job_by_id(request.match_info["id"])

    async def _job_by_id(self, job_id: str) -> RenderJob:
        job = await self.book.get(job_id) if _looks_like_id(job_id) else None
        if job is None:
            raise RequestError(f"no render job {job_id[:40]!r}", 404)
        return job

    async def _result_url(self, job: RenderJob) -> str | None:
        if job.status != "done":
            return None
        url = await asyncio.to_thread(self.store.url, job.result_key)
        return url or f"/v1/renders/{job.id}/result"

    async def _refresh_depth(self) -> None:
        while True:
            try:
                self.depth.set(await self.queue.depth())
            except (RedisError, OSError) as e:
                log.debug("render queue depth: %s", e)
            await sleep_for(self.clock, DEPTH_EVERY_S)


def _job_id(idempotency_key: str | None) -> str:
    """A new id, or the same id for the same ``Idempotency-Key``."""
    if not idempotency_key:
        return uuid.uuid4().hex
    if len(idempotency_key) > 200:
        raise RequestError("Idempotency-Key is over 200 characters", 400)
    return hashlib.sha256(b"avatar-render:" + idempotency_key.encode()).hexdigest()[:32]


def _looks_like_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


async def _check_webhook(url: str, cfg: Config) -> None:
    if webhook_secret() is None:
        raise RequestError("webhook_url needs a signing secret on the server "
                           "(AVATAR_WEBHOOK_SECRET)", 422)  # fmt: skip
    await check_url(url, "webhook_url", cfg.renders)
