"""Events off the tick's critical path (issue 12): emit returns at once, the Event is created in
the background, duplicates still queued are not sent twice, a refused write kills no worker,
and each Event is sent in the context of the tick that emitted it."""

from __future__ import annotations

import asyncio
import contextvars
import json

import httpx

from canary.adapters.kube import Kube
from canary.outbox import EventOutbox

CANARY = {"apiVersion": "canary.dev/v1beta1", "metadata": {"name": "podinfo", "namespace": "shop", "uid": "u1"}}
tick_of: contextvars.ContextVar[str] = contextvars.ContextVar("tick_of", default="")


def slow_api(sent: list, delay: float, status: int = 201):
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        sent.append(json.loads(request.content))
        return httpx.Response(status, json=sent[-1] if status < 400 else {"reason": "Forbidden", "message": "no"})
    return handler


def test_emit_returns_before_the_event_is_created_and_duplicates_are_counted() -> None:
    sent: list = []

    async def go() -> None:
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(slow_api(sent, 0.2)))
        box = EventOutbox(kube, workers=2)
        loop = asyncio.get_running_loop()
        t = loop.time()
        for _ in range(3):
            await box.emit(CANARY, "Normal", "Synced", "weight 25")
        await box.emit(CANARY, "Normal", "Synced", "weight 50")
        assert loop.time() - t < 0.05  # nothing waited for the API server
        assert sent == []
        assert await box.flush(2.0)
        await box.aclose()
        assert box.deduplicated == 2 and box.sent == 2

    asyncio.run(go())
    assert sorted(e["message"] for e in sent) == ["weight 25", "weight 50"]


def test_a_refused_event_is_given_up_and_the_next_is_sent() -> None:
    seen: list[str] = []

    def guard(verb: str, path: str) -> None:
        seen.append(tick_of.get())
        if tick_of.get() == "lost":
            raise RuntimeError("not the holder of this shard")

    async def go() -> None:
        sent: list = []
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(slow_api(sent, 0.0)))
        kube.write_guard = guard
        box = EventOutbox(kube, workers=1)
        tick_of.set("lost")
        await box.emit(CANARY, "Normal", "Synced", "one")
        tick_of.set("held")
        await box.emit(CANARY, "Normal", "Synced", "two")
        assert await box.flush(2.0)
        await box.aclose()
        assert [e["message"] for e in sent] == ["two"]

    asyncio.run(go())
    assert seen == ["lost", "held"]  # judged in the emitting tick's context


def test_the_queue_is_bounded() -> None:
    async def go() -> None:
        sent: list = []
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(slow_api(sent, 0.5)))
        box = EventOutbox(kube, workers=1, max_queue=3)
        for i in range(10):
            await box.emit(CANARY, "Normal", "Synced", f"m{i}")
        assert box.dropped >= 6
        await box.aclose(timeout=0.1)

    asyncio.run(go())
