"""Kubernetes Events off the tick's critical path: queued, deduplicated, sent by 16 workers.

The reconciler emits a tick's Events only after its decision is written (canary/reconciler.py,
step 5); with this outbox that emit returns at once and the Event is created in the background,
so a slow API server no longer stretches every Canary's cadence by one request per step. An
Event equal to one still queued (same Canary, type, reason and message) is counted, not sent
twice. With a slow API server (1 s per create) 16 workers keep up with a release of 1,000
Canaries (a few Events per step each); the queue is bounded: past `max_queue` an Event is dropped with a log line (Events are
best effort; the status holds the truth). Each Event is sent in the context of the tick that
emitted it, so the write guard (fencing, per shard) judges it as that tick's write.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from datetime import datetime, timezone
from typing import Any

from canary.adapters.events import EventRecorder
from canary.adapters.kube import Kube

log = logging.getLogger("canary.outbox")

Key = tuple[str, str, str, str, str]


class EventOutbox(EventRecorder):
    def __init__(self, kube: Kube, workers: int = 16, max_queue: int = 10000):
        super().__init__(kube)
        self._workers = workers
        self._max_queue = max_queue
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._pending: set[Key] = set()
        self.deduplicated = 0
        self.dropped = 0
        self.sent = 0

    async def emit(self, canary: dict, type_: str, reason: str, message: str, now: datetime | None = None) -> None:
        meta = canary.get("metadata") or {}
        key: Key = (str(meta.get("namespace")), str(meta.get("name")), type_, reason, message)
        if key in self._pending:
            self.deduplicated += 1
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._queue.qsize() >= self._max_queue:
            self.dropped += 1
            log.warning("event queue full: %s/%s %s dropped", key[0], key[1], reason)
            return
        self._pending.add(key)
        self._queue.put_nowait((key, contextvars.copy_context(), canary, type_, reason, message,
                                now or datetime.now(timezone.utc)))
        self._tasks = [t for t in self._tasks if not t.done()]
        while len(self._tasks) < self._workers:
            self._tasks.append(asyncio.create_task(self._work(), name="event-outbox"))

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            key, ctx, canary, type_, reason, message, now = await self._queue.get()
            try:
                send = asyncio.create_task(EventRecorder.emit(self, canary, type_, reason, message, now), context=ctx)
                await send
                self.sent += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - refused by the fence, or a bug: never kill the worker
                log.info("event for %s/%s not sent: %s", key[0], key[1], e)
            finally:
                self._pending.discard(key)
                self._queue.task_done()

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def flush(self, timeout: float) -> bool:
        """Wait (bounded) until every queued Event was sent or given up. True if all were."""
        if self._queue is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def aclose(self, timeout: float = 5.0) -> Any:
        await self.flush(timeout)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
