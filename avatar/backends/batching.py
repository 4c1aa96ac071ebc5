"""Cross-session dynamic batching: one worker per model runs the due calls of every session as one
batch, with a deadline (like Triton's dynamic batcher).

Sessions call ``run`` from executor threads (or through a per-session :class:`BatchClient`) and
block; the worker takes the oldest request, gathers the queued requests whose inputs have the same
non-batch shapes (the same number of mel frames...), concatenates them along each tensor's batch
axis, runs the inner backend once, splits the outputs (copies) and wakes the callers.

When to run: at once when the batch is full or when no other session is expected before the
deadline (``max_wait_ms`` after the oldest request arrived). A session is *expected* when its
client has a steady cadence (a 25 fps renderer calls every 40 ms) and its next call falls before
the deadline; a client that went quiet (the motion model sleeps in silence) is not waited for. So
a lone request never waits, and ``max_wait_ms=0`` batches only what queued up while the worker
was busy.

Threads: a caller's thread is blocked until its batch has run, so an executor can have at most
its thread count of requests pending: give it room for the sessions' blocked calls
(:func:`avatar.compose.engines.executor_workers`). The worker never waits for an executor, so a
small pool means small batches, never a deadlock.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar.backends.protocol import InferenceBackend
from avatar.clock import Clock
from avatar.errors import ModelError
from avatar.units import NS_PER_S

log = logging.getLogger("avatar.backends")

Key = tuple[tuple[int, ...], ...]  # every input's shape without its batch axis


@dataclass(slots=True, eq=False)  # compared by identity (queue.remove)
class _Request:
    inputs: Mapping[str, np.ndarray]
    key: Key
    rows: int  # along the batch axis
    arrival_ns: int
    client: BatchClient | None
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class BatchingBackend:
    """An :class:`InferenceBackend` that batches the calls of many threads into one ``inner`` run.

    ``batch_axes``: the batch axis of inputs and outputs where it is not 0 (the motion model's
    attention caches: :data:`avatar.motion.channels.BATCH_AXES`). ``max_batch`` counts rows.
    Outputs are the caller's own arrays. An error of the inner backend is raised to every caller
    of that batch. :meth:`close` stops the worker once the queue is empty; later calls raise
    :class:`ModelError`.
    """

    def __init__(
        self,
        inner: InferenceBackend,
        clock: Clock,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 2.0,
        batch_axes: Mapping[str, int] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.inner, self.clock = inner, clock
        self.name, self.meta = inner.name, inner.meta
        self.input_names, self.output_names = tuple(inner.input_names), tuple(inner.output_names)
        self.max_batch, self.max_wait_ns = max_batch, round(max_wait_ms * NS_PER_S / 1000)
        self.axes = dict(batch_axes or {})
        self.batches = self.rows = 0  # inner runs, and the rows they carried
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._clients: weakref.WeakSet[BatchClient] = weakref.WeakSet()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"batching-{self.name}",
                                        daemon=True)  # fmt: skip
        self._worker.start()

    # -- callers ----------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``inputs`` (any number of rows) in the next batch that fits; blocks until done."""
        return self.submit(inputs, None)

    def client(self) -> BatchClient:
        """A session's own view: its cadence lets the worker wait for it (see module doc)."""
        c = BatchClient(self)
        with self._cond:
            self._clients.add(c)
        return c

    def submit(
        self, inputs: Mapping[str, np.ndarray], client: BatchClient | None
    ) -> dict[str, Any]:
        """Queue a call (of ``client``; None: anonymous) and block until its batch has run."""
        req = self._request(inputs, client)
        with self._cond:
            if self._closed:
                raise ModelError(f"the {self.name} batching backend is closed")
            if client is not None:
                client.note(req.arrival_ns)
            self._queue.append(req)
            self._cond.notify()  # only the worker waits on it
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.outputs is not None
        return req.outputs

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken into a batch."""
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        """Stop the worker: what is queued still runs (without waiting for a deadline)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not threading.current_thread():
            self._worker.join()
        with self._cond:
            queued, self._queue = self._queue, []
        for req in queued:
            req.error = ModelError(f"the {self.name} batching backend was closed")
            req.done.set()

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def _axis(self, name: str) -> int:
        return self.axes.get(name, 0)

    def _request(self, inputs: Mapping[str, np.ndarray], client: BatchClient | None) -> _Request:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelError(f"inputs {missing} missing for {self.name}")
        shapes = [(n, np.shape(inputs[n])) for n in self.input_names]
        key = tuple(s[: self._axis(n)] + s[self._axis(n) + 1 :] for n, s in shapes)
        name, shape = shapes[0]
        return _Request(inputs, key, shape[self._axis(name)], self.clock.now_ns(), client)

    # -- the worker -------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    batch = self._collect()
                if batch is None:
                    return
                self._run(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.error("batching worker %s failed: %r", self.name, exc, exc_info=exc)
            with self._cond:
                self._closed = True
                queued, self._queue = self._queue, []
            for req in queued:
                req.error = ModelError(f"the {self.name} batching worker failed: {exc!r}")
                req.done.set()

    def _collect(self) -> list[_Request] | None:
        """Wait for a request, then for its batch to fill (see the module docstring)."""
        while not self._queue:
            if self._closed:
                return None
            self._cond.wait()
        first = self._queue[0]
        deadline = first.arrival_ns + self.max_wait_ns
        while True:
            group = self._group(first.key)
            if self._closed or sum(r.rows for r in group) >= self.max_batch:
                break
            now = self.clock.now_ns()
            if now >= deadline or not self._expected(deadline, now):
                break
            self._cond.wait((deadline - now) / NS_PER_S)
        for req in group:
            self._queue.remove(req)
        return group

    def _group(self, key: Key) -> list[_Request]:
        """Queued requests with this key, oldest first, up to ``max_batch`` rows (the oldest
        always, even when it alone is larger)."""
        group: list[_Request] = []
        rows = 0
        for req in self._queue:
            if req.key == key and (not group or rows + req.rows <= self.max_batch):
                group.append(req)
                rows += req.rows
        return group

    def _expected(self, deadline: int, now: int) -> bool:
        """Whether a client with nothing queued is due to call before ``deadline``."""
        queued = {id(r.client) for r in self._queue}
        return any(c.due_by(deadline, now) for c in list(self._clients) if id(c) not in queued)

    def _run(self, batch: list[_Request]) -> None:
        try:
            outputs = self._split(self.inner.run(self._feeds(batch)), batch)
        except Exception as exc:  # every caller of this batch gets the inner backend's error
            for req in batch:
                req.error = exc
        else:
            for req, out in zip(batch, outputs, strict=True):
                req.outputs = out
            self.batches += 1
            self.rows += sum(r.rows for r in batch)
        finally:
            for req in batch:
                req.done.set()

    def _feeds(self, batch: list[_Request]) -> dict[str, np.ndarray]:
        if len(batch) == 1:
            return dict(batch[0].inputs)
        return {
            n: np.concatenate([np.asarray(r.inputs[n], np.float32) for r in batch], self._axis(n))
            for n in self.input_names
        }

    def _split(self, out: dict[str, np.ndarray], batch: list[_Request]) -> list[dict[str, Any]]:
        """Each request's rows of every output, copied (the inner backend reuses buffers)."""
        cuts = np.cumsum([r.rows for r in batch])[:-1]
        parts: list[dict[str, Any]] = [{} for _ in batch]
        for name, value in out.items():
            for part, rows in zip(parts, np.split(value, cuts, self._axis(name)), strict=True):
                part[name] = rows.copy()
        return parts


class BatchClient:
    """One session's :class:`InferenceBackend` onto a shared :class:`BatchingBackend`.

    It remembers when its session calls (an average period), so the worker can tell whether
    this session is due before a batch's deadline. One client serves one caller at a time (a
    session's analysis or its renderer), as a session's own backend would.
    """

    def __init__(self, batcher: BatchingBackend) -> None:
        self.batcher = batcher
        self.name, self.meta = batcher.name, batcher.meta
        self.input_names, self.output_names = batcher.input_names, batcher.output_names
        self.last_ns: int | None = None
        self.period_ns = 0  # 0: no cadence known yet

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.batcher.submit(inputs, self)

    def note(self, now: int) -> None:
        """A call at ``now``: update the period (a moving average of the gaps)."""
        if self.last_ns is not None:
            gap = now - self.last_ns
            self.period_ns = gap if self.period_ns == 0 else (self.period_ns + gap) // 2
        self.last_ns = now

    def due_by(self, deadline: int, now: int) -> bool:
        """Whether its next call is expected by ``deadline``: it has a cadence, has called
        within two periods (not gone quiet) and its next call falls before the deadline."""
        if self.last_ns is None or self.period_ns <= 0:
            return False
        if now - self.last_ns > 2 * self.period_ns:
            return False
        return self.last_ns + self.period_ns <= deadline
