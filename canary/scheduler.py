"""One asyncio task per Canary, woken by time (the engine's wake_after) or by watch events.

We do not use kopf daemons: they put a finalizer on every Canary, which blocks deleting a
Canary (or its namespace) whenever the operator is down. Here the Canary objects come from
the watch (kopf on.event), the latest version always replaces the previous one, and a
global semaphore bounds how many ticks run at once.

Tenants are isolated: a namespace has `max_per_namespace` of the slots as its own share and
borrows beyond it only while more than half of them are free (canary/slots.py), and every tick
has a deadline (`tick_timeout`): fifty black-holed webhooks in one namespace cannot stop a Canary
of another namespace from rolling back, and a namespace alone is not held to its share. The
Canary is read after the slot is taken, so a tick never acts on a spec or a command that was
replaced while it queued. A tick cut at its deadline is like a crash: its decision, if written,
is completed by the next tick.

The scheduler can be paused (a replica that is not the leader, see canary/leader.py): the
per-Canary tasks keep receiving objects but start no tick until `resume()`; `pause()` also
cancels the ticks in flight, so a replica that lost its lease stops writing at once.
`drain()` is the graceful shutdown: no new tick, the running ones may finish (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping

from canary.slots import FairSlots

if TYPE_CHECKING:
    from canary.reconciler import TickResult

log = logging.getLogger("canary.scheduler")

Key = tuple[str, str]  # (namespace, name)
Tick = Callable[[Mapping], Awaitable["TickResult"]]


class TickTimeout(Exception):
    """A tick ran past its deadline and was cancelled."""


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
    def __init__(self, tick: Tick, max_concurrent: int = 50, min_wait: float = 0.05, max_wait: float = 60.0,
                 max_per_namespace: int | None = None, tick_timeout: float = 120.0):
        self._tick = tick
        self._slots = FairSlots(max_concurrent, max_per_namespace or max(1, max_concurrent // 5))
        self.tick_timeout = tick_timeout
        self.timeouts = 0  # ticks cut at their deadline
        self._objects: dict[Key, Mapping] = {}
        self._wake: dict[Key, asyncio.Event] = {}
        self._tasks: dict[Key, asyncio.Task] = {}
        self._targets: dict[Key, Key] = {}  # (ns, target name) -> canary key
        self._active = asyncio.Event()  # cleared: paused (not the leader, or shutting down)
        self._active.set()
        self._closing = False
        self._inflight: dict[Key, asyncio.Task] = {}  # ticks running now
        self.waiting = 0  # loops whose tick is due but waiting for a slot (canary_scheduler_queue_depth)
        self._min_wait = min_wait
        self._max_wait = max_wait
        self.ticks = 0
        self.on_queue_wait: Callable[[float], None] | None = None  # seconds a due tick waited for its slots

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
        task = self._tasks.get(key)
        self._forget(key)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _forget(self, key: Key) -> None:
        self._objects.pop(key, None)
        for k, v in list(self._targets.items()):
            if v == key:
                del self._targets[k]
        self._tasks.pop(key, None)
        self._wake.pop(key, None)

    def keys(self) -> list[Key]:
        return list(self._objects)

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

    def cancel_where(self, pred: Callable[[Key], bool]) -> int:
        """Cancel the running ticks of the Canaries `pred` selects (a shard this replica lost)."""
        cancelled = 0
        for key, task in list(self._inflight.items()):
            if pred(key) and not task.done():
                task.cancel()
                cancelled += 1
        return cancelled

    def wake_where(self, pred: Callable[[Key], bool]) -> int:
        """Wake the Canaries `pred` selects (a shard this replica just took)."""
        woken = 0
        for key, ev in list(self._wake.items()):
            if pred(key):
                ev.set()
                woken += 1
        return woken

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
    async def _slot(self, namespace: str):
        """One tick slot of the namespace's fair share; `waiting` counts the loops queued for one."""
        self.waiting += 1
        queued = time.perf_counter()
        try:
            await self._slots.acquire(namespace)
        finally:
            self.waiting -= 1
        if self.on_queue_wait is not None:
            self.on_queue_wait(time.perf_counter() - queued)
        try:
            yield
        finally:
            self._slots.release(namespace)

    async def _run_tick(self, key: Key, obj: Mapping) -> "TickResult | None":
        """The tick as its own task, so that `pause()` can cancel it without ending the loop.
        None when it was cancelled that way."""
        task = asyncio.create_task(self._tick(obj), name=f"tick:{key[0]}/{key[1]}")
        self._inflight[key] = task
        try:
            done, _ = await asyncio.wait({task}, timeout=self.tick_timeout)
            if not done:
                task.cancel()
                await asyncio.wait({task})
                self.timeouts += 1
                log.warning("tick of %s/%s cut at its deadline of %.0fs", *key, self.tick_timeout)
                raise TickTimeout()
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
            try:
                async with self._slot(key[0]):
                    if not self._active.is_set():
                        continue  # paused while waiting for a slot
                    obj = self._objects.get(key)
                    if obj is None:
                        break  # removed while it queued
                    result = await self._run_tick(key, obj)  # the newest copy, read now
                if result is None:
                    log.info("tick of %s/%s cancelled (paused)", *key)
                    continue
                self.ticks += 1
                wait = result.wake_after
                held = self._objects.get(key)
                if result.written is not None and held is not None and not is_older(result.written, held):
                    self._objects[key] = result.written
                if getattr(result, "gone", False):
                    log.info("%s/%s is gone: its loop stops", *key)
                    self._forget(key)
                    return
            except TickTimeout:
                wait = 1.0
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
