"""The scheduler isolates tenants (issue 9.14, 10.4): fair per-namespace slots (canary/slots.py;
tests/unit/test_slots.py), a deadline per tick,
the Canary read after the slot is taken, and a loop that stops for a Canary that is gone."""

from __future__ import annotations

import asyncio

from canary.reconciler import TickResult
from canary.scheduler import Scheduler


def canary(ns: str, name: str, rv: int = 1, **annotations: str) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(rv), "generation": 1,
                         "annotations": annotations or None},
            "spec": {"targetRef": {"name": name}}}


async def test_one_namespace_of_hung_ticks_does_not_stop_another_namespace():
    started: list[str] = []
    hang = asyncio.Event()

    async def tick(obj):
        ns = obj["metadata"]["namespace"]
        started.append(ns)
        if ns == "noisy":
            await hang.wait()  # fifty black-holed webhooks
        return TickResult(60)

    sched = Scheduler(tick, max_concurrent=50, tick_timeout=30)
    for i in range(50):
        sched.upsert(canary("noisy", f"c{i}"))
    await asyncio.sleep(0.05)
    sched.upsert(canary("quiet", "must-roll-back"))
    for _ in range(50):
        await asyncio.sleep(0.01)
        if "quiet" in started:
            break
    assert "quiet" in started, "a tick of another namespace waited behind the noisy one"
    # a namespace alone borrows beyond its share (a fifth) only while half of the slots stay free
    assert started.count("noisy") == 25
    hang.set()
    await sched.stop()


async def test_a_tick_past_its_deadline_is_cut_and_tried_again():
    calls = []

    async def tick(obj):
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            await asyncio.sleep(10)
        return TickResult(60)

    sched = Scheduler(tick, tick_timeout=0.1, min_wait=0.01)
    sched.upsert(canary("a", "slow"))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(calls) >= 2:
            break
    assert len(calls) >= 2 and sched.timeouts == 1
    await sched.stop()


async def test_the_canary_is_read_after_the_slot_is_taken():
    seen: list[str] = []
    gate = asyncio.Event()

    async def tick(obj):
        seen.append(obj["metadata"]["resourceVersion"])
        if obj["metadata"]["name"] == "holder":
            await gate.wait()
        return TickResult(60)

    sched = Scheduler(tick, max_concurrent=1, max_per_namespace=1)
    sched.upsert(canary("a", "holder"))
    await asyncio.sleep(0.02)
    sched.upsert(canary("a", "queued", rv=5))
    await asyncio.sleep(0.02)
    sched.upsert(canary("a", "queued", rv=9, **{"canary.dev/abort": "now"}))  # changed while it queued
    gate.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(seen) >= 2:
            break
    assert seen[1] == "9", seen
    await sched.stop()


async def test_a_gone_canary_stops_its_loop():
    calls = []

    async def tick(obj):
        calls.append(1)
        return TickResult(0.01, gone=True)

    sched = Scheduler(tick, min_wait=0.01)
    sched.upsert(canary("a", "zombie"))
    await asyncio.sleep(0.1)
    assert calls == [1] and sched.size == 0
    await sched.stop()
