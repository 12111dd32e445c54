"""The tick slots, shared fairly by namespaces and without waste.

A namespace's own `share` of the slots comes first. Beyond it, a namespace borrows free slots, but
never so many that fewer than `reserve` stay free: a team alone on the operator (one namespace of a
thousand Canaries) uses `total - reserve` slots instead of its share, and a team that arrives while
another borrows finds `reserve` slots free at once. A borrowed slot is given back when its tick
ends (each tick has a deadline, canary/scheduler.py), and a freed slot goes first to a namespace
below its share, namespaces taking turns; then, while more than `reserve` are free, to borrowers.
Within a namespace, ticks get slots in the order they asked.
"""

from __future__ import annotations

import asyncio
from collections import deque


class FairSlots:
    def __init__(self, total: int, share: int, reserve: int | None = None):
        if total < 1:
            raise ValueError("at least one slot")
        self.total = total
        self.share = max(1, min(share, total))
        self.reserve = min(max(reserve if reserve is not None else total // 2, 0), total - self.share)
        self.used = 0
        self.held: dict[str, int] = {}
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}  # in turn order

    def _grantable(self, ns: str) -> bool:
        free = self.total - self.used
        return free > 0 and (self.held.get(ns, 0) < self.share or free > self.reserve)

    def _take(self, ns: str) -> None:
        self.used += 1
        self.held[ns] = self.held.get(ns, 0) + 1

    async def acquire(self, ns: str) -> None:
        if ns not in self._queues and self._grantable(ns):
            self._take(ns)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(ns, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(ns)  # granted as the waiter was cancelled: give it back
            else:
                self._drop(ns, fut)
            raise

    def release(self, ns: str) -> None:
        self.used -= 1
        left = self.held[ns] - 1
        if left:
            self.held[ns] = left
        else:
            del self.held[ns]
        self._dispatch()

    def _drop(self, ns: str, fut: asyncio.Future[None]) -> None:
        q = self._queues.get(ns)
        if q is not None:
            try:
                q.remove(fut)
            except ValueError:
                pass
            if not q:
                del self._queues[ns]
        self._dispatch()  # a cancelled head may have held the turn of others

    def _next(self) -> str | None:
        """The namespace whose turn it is: below its share first, then (if any may borrow) the first."""
        for ns in self._queues:
            if self.held.get(ns, 0) < self.share:
                return ns
        if self.total - self.used > self.reserve:
            return next(iter(self._queues), None)
        return None

    def _dispatch(self) -> None:
        while self.used < self.total:
            ns = self._next()
            if ns is None:
                return
            q = self._queues.pop(ns)
            fut = q.popleft()
            if q:
                self._queues[ns] = q  # to the end of the turn order
            if fut.cancelled():
                continue
            self._take(ns)
            fut.set_result(None)
