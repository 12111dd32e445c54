"""One asyncio task per Canary, woken by time (the engine's wake_after) or by watch events.

We do not use kopf daemons: they put a finalizer on every Canary, which blocks deleting a
Canary (or its namespace) whenever the operator is down. Here the Canary objects come from
the watch (kopf on.event), the latest version always replaces the previous one, and a
global semaphore bounds how many ticks run at once.
"""

from __future__ import annotations

import asyncio
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

    # ---- the per-Canary loop ----------------------------------------------------

    async def _loop(self, key: Key) -> None:
        while key in self._objects:
            wake = self._wake[key]
            wake.clear()
            obj = self._objects[key]
            try:
                async with self._sem:
                    result = await self._tick(obj)
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
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
