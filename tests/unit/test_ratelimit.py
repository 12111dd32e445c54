"""Client-side QPS/burst and 429 handling of the Kube client (issue 12)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from canary.adapters.kube import ApiError, Kube
from canary.ratelimit import MAX_RETRY_AFTER, TokenBucket, retry_after


def test_burst_then_qps() -> None:
    async def go() -> float:
        bucket = TokenBucket(qps=20, burst=5)
        loop = asyncio.get_running_loop()
        t = loop.time()
        for _ in range(5):
            await bucket.take()
        assert loop.time() - t < 0.05  # the burst goes at once
        for _ in range(10):
            await bucket.take()
        return loop.time() - t

    elapsed = asyncio.run(go())
    assert 0.4 <= elapsed < 1.0  # then 20 per second


def test_retry_after_is_bounded() -> None:
    assert retry_after("2", 0) == 2.0
    assert retry_after("3600", 0) == MAX_RETRY_AFTER
    assert retry_after(None, 1) == 1.0
    assert retry_after("soon", 0) == 0.5
    with pytest.raises(ValueError):
        TokenBucket(qps=0, burst=1)


def test_a_429_is_retried_after_its_retry_after_and_fenced_again() -> None:
    answers = [429, 429, 200]
    guarded: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        code = answers.pop(0)
        if code == 429:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"reason": "TooManyRequests"})
        return httpx.Response(200, json={"metadata": {"name": "a", "namespace": "ns"}})

    async def go() -> dict:
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(handler))
        kube.write_guard = lambda verb, path: guarded.append(verb)
        return await kube.patch("v1", "configmaps", "ns", "a", {"data": {}})

    assert asyncio.run(go())["metadata"]["name"] == "a"
    assert guarded == ["patch"] * 3 and answers == []


def test_429_forever_is_an_error_in_the_end() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "0"}, json={"reason": "TooManyRequests", "message": "x"})

    async def go() -> None:
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(handler))
        await kube.get("v1", "configmaps", "ns", "a")

    with pytest.raises(ApiError) as e:
        asyncio.run(go())
    assert e.value.status == 429
