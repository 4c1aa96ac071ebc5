"""Render jobs: text or audio in, a finished avatar video out (docs/renders.md).

- :mod:`.request`: what a client may ask (``POST /v1/renders``), checked before anything is queued.
- :mod:`.jobs`: a job's record and where records live (:class:`~.jobs.JobBook`: a folder, Redis).
- :mod:`.stores`: where inputs and results live (a folder, or S3 with presigned URLs).
- :mod:`.runner`: one job, start to end, on the same chain as ``avatar render``.
- :mod:`.queues`: who runs the jobs: this process, or ``avatar worker``s through arq on Redis.
- :mod:`.api`: the HTTP routes; :mod:`.webhook`: the signed completion call.
"""
