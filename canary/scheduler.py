"""One asyncio task per Canary, woken by time (the engine's wake_after) or by watch events.

We do not use kopf daemons: they put a finalizer on every Canary, which blocks deleting a
Canary (or its namespace) whenever the operator is down. Here the Canary objects come from
the watch (kopf on.event), the latest version always replaces the previous one, and a
global semaphore bounds how many ticks run at once.

The scheduler can be paused (a replica that is not the leader, see canary/leader.py): the
per-Canary tasks keep receiving objects but start no tick until `resume()`; `pause()` also
cancels the ticks in flight, so a replica that lost its lease stops writing at once.
`drain()` is the graceful shutdown: no new tick, the running ones may finish (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping

if TYPE_CHECKING:
    from canary.reconciler import TickResult

log = logging.getLogger("canary.scheduler")

Key = tuple[str, str]  # (namespace, name)
Tick = Callable[[Mapping], Awaitable["TickResult"]]


def _rv(obj: Mapping | None) -> int | None:
    rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def is_older(candidate: Mapping, held: Mapping | None) -> bool:
    """True if `candidate` is an older version than `held` (etcd resourceVersions are integers;
    when they are not, the newest arrival wins)."""
    a, b = _rv(candidate), _rv(held)
    return a is not None and b is not None and a < b


def _spec_changed(old: Mapping, new: Mapping) -> bool:
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    return (
        om.get("generation") != nm.get("generation")
        or om.get("annotations") != nm.get("annotations")
        or nm.get("deletionTimestamp") is not None
    )


class Scheduler:
    def __init__(self, tick: Tick, max_concurrent: int = 50, min_wait: float = 0.05, max_wait: float = 60.0):
        self._tick = tick
        self._objects: dict[Key, Mapping] = {}
        self._wake: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task] = {}
        self._targets: dict[Key, Key] = {}  # (ns, target name) -> canary key
        self._sem = asyncio.Semaphore(max_concurrent)
        self._active = asyncio.Event()  # cleared: paused (not the leader, or shutting down)
        self._active.set()
        self._closing = False
        self._inflight: dict[Key, asyncio.Task] = {}  # ticks running now
        self.waiting = 0  # loops whose tick is due but waiting for a slot (canary_scheduler_queue_depth)
        self._min_wait = min_wait
        self._max_wait = max_wait
        self.ticks = 0

    # ---- fed by watches ---------------------------------------------------------

    def upsert(self, obj: Mapping) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        prev = self._objects.get(key)
        if is_older(obj, prev):
            return  # we already hold a newer copy (our own status write)
        self._objects[key] = obj
        target = ((obj.get("spec") or {}).get("targetRef") or {}).get("name")
        for k, v in list(self._targets.items()):
            if v == key and k[1] != target:
                del self._targets[k]
        if target:
            self._targets[(key[0], target)] = key
        if key not in self._tasks or self._tasks[key].done():
            self._wake[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._loop(key), name=f"canary:{key[0]}/{key[1]}")
        elif prev is None or _spec_changed(prev, obj):
            # our own status writes come back through the watch: they need no tick
            self._wake[key].set()

    def remove(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._objects.pop(key, None)
        for k, v in list(self._targets.items()):
            if v == key:
                del self._targets[k]
        task = self._tasks.pop(key, None)
        self._wake.pop(key, None)
        if task is not None:
            task.cancel()

    def wake_target(self, namespace: str, target: str) -> None:
        """A watched workload changed: wake the Canary that targets it, if any."""
        key = self._targets.get((namespace, target))
        if key is None and target.endswith("-primary"):
            key = self._targets.get((namespace, target[: -len("-primary")]))
        if key is not None and key in self._wake:
            self._wake[key].set()

    def wake(self, namespace: str, name: str) -> None:
        ev = self._wake.get((namespace, name))
        if ev is not None:
            ev.set()

    @property
    def size(self) -> int:
        return len(self._objects)

    # ---- leadership and shutdown ----------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active.is_set()

    @property
    def in_flight(self) -> int:
        return sum(1 for t in self._inflight.values() if not t.done())

    def pause(self, cancel_inflight: bool = True) -> int:
        """Start no tick until `resume()`; cancel the running ones. Returns how many were cancelled."""
        self._active.clear()
        cancelled = 0
        if cancel_inflight:
            for task in list(self._inflight.values()):
                if not task.done():
                    task.cancel()
                    cancelled += 1
        return cancelled

    def resume(self) -> None:
        if not self._closing:
            self._active.set()

    async def drain(self, timeout: float) -> bool:
        """Graceful stop: start no new tick, give the running ones up to `timeout` s to finish,
        then stop everything. True if none had to be cut short."""
        self._closing = True
        self._active.clear()
        running = [t for t in self._inflight.values() if not t.done()]
        finished = True
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout)
            finished = not pending
        await self.stop()
        return finished

    # ---- the per-Canary loop ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _slot(self):
        """One of the max_concurrent tick slots; `waiting` counts the loops queued for one."""
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._sem.release()

    async def _run_tick(self, key: Key, obj: Mapping) -> "TickResult | None":
        """The tick as its own task, so that `pause()` can cancel it without ending the loop.
        None when it was cancelled that way."""
        task = asyncio.create_task(self._tick(obj), name=f"tick:{key[0]}/{key[1]}")
        self._inflight[key] = task
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the loop itself is being stopped
            task.cancel()
            raise
        finally:
            if self._inflight.get(key) is task:
                del self._inflight[key]
        if task.cancelled():
            return None
        return task.result()

    async def _loop(self, key: Key) -> None:
        while key in self._objects:
            if not self._active.is_set():
                await self._active.wait()
                continue  # re-read: the Canary may have changed or gone meanwhile
            wake = self._wake[key]
            wake.clear()
            obj = self._objects[key]
            try:
                async with self._slot():
                    if not self._active.is_set():
                        continue  # paused while waiting for a slot
                    result = await self._run_tick(key, obj)
                if result is None:
                    log.info("tick of %s/%s cancelled (paused)", *key)
                    continue
                self.ticks += 1
                wait = result.wake_after
                held = self._objects.get(key)
                if result.written is not None and held is not None and not is_older(result.written, held):
                    self._objects[key] = result.written
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one Canary's tick must not stop the others
                log.exception("tick of %s/%s crashed; retrying", *key)
                wait = 5.0
            wait = min(max(wait, self._min_wait), self._max_wait)
            try:
                await asyncio.wait_for(wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        tasks = list(self._tasks.values()) + list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()
