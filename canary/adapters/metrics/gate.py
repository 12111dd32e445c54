"""One gate in front of every metric server: bounded concurrency and in-flight deduplication.

At a thousand Canaries the ticks of one interval send their queries at about the same moment;
without a bound they open as many connections to one Prometheus as there are checks, and a
slow Prometheus then stretches every tick. So:

* at most `MAX_PER_SERVER` queries are in flight per server address (the others wait their
  turn, which is fair: first come, first served);
* an identical query already in flight (same URL, same query text, same parameters and the
  same credentials) is not sent again: the callers share its answer or its error. Nothing is
  cached beyond the flight, so no answer is older than a query sent now would be. The
  credentials are part of the key (as a digest, never kept in clear), so one tenant never
  receives an answer obtained with another tenant's token.

A gate belongs to one event loop (asyncio primitives do), hence one per running loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_PER_SERVER = 32


def credentials_digest(*parts: object) -> str:
    """A digest of the headers and auth a query is sent with (the key never holds them)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class QueryGate:
    def __init__(self, max_per_server: int = MAX_PER_SERVER):
        self.max_per_server = max_per_server
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        self.sent = 0
        self.shared = 0

    async def run(self, server: str, key: Hashable, send: Callable[[], Awaitable[T]]) -> T:
        """`send()`'s answer, or that of the identical query in flight."""
        while (flight := self._flights.get(key)) is not None:
            self.shared += 1
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    continue  # the sender was cancelled (its tick's deadline), not us: send it ourselves
                raise
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            slots = self._slots.get(server)
            if slots is None:
                slots = self._slots[server] = asyncio.Semaphore(self.max_per_server)
            async with slots:
                self.sent += 1
                result = await send()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # marked as retrieved: the waiters, if any, get it too
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]


_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, QueryGate]" = weakref.WeakKeyDictionary()


def gate() -> QueryGate:
    """The gate of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _gates.get(loop)
    if found is None:
        found = _gates[loop] = QueryGate()
    return found
