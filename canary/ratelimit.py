"""Client-side QPS and burst for the Kubernetes API client (as client-go's token bucket), and
the wait a 429 answer asks for.

A token bucket: `burst` requests may go at once, then `qps` per second. A thousand Canaries
whose ticks come due together are spread over a few seconds instead of hitting the API server
(and its priority-and-fairness queues) in one burst; a 429 is retried after its Retry-After.
"""

from __future__ import annotations

import asyncio
import time

MAX_RETRY_AFTER = 10.0  # seconds: a longer wait is not honoured (the tick fails and is retried)


class TokenBucket:
    def __init__(self, qps: float, burst: int, clock=time.monotonic):
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds spent waiting for a token, in total

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now

    async def take(self) -> None:
        async with self._lock:  # first come, first served
            self._refill()
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.qps
                self.waited += wait
                await asyncio.sleep(wait)
                self._refill()
            self._tokens -= 1


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait before retrying a 429: the server's Retry-After (seconds), else a short
    backoff; never more than MAX_RETRY_AFTER."""
    try:
        seconds = float(value) if value is not None else 0.5 * 2 ** attempt
    except ValueError:
        seconds = 0.5 * 2 ** attempt
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
