"""Fair tick slots (canary/slots.py, issue 12): one namespace of a thousand Canaries was held to
a fifth of the slots while four fifths stood idle; now a namespace borrows beyond its share, but
never the last half, and a freed slot goes first to a namespace below its share."""

from __future__ import annotations

import asyncio

import pytest

from canary.reconciler import TickResult
from canary.scheduler import Scheduler
from canary.slots import FairSlots


def canary(ns: str, name: str) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "resourceVersion": "1", "generation": 1},
            "spec": {"targetRef": {"name": name}}}


async def test_a_namespace_alone_is_not_held_to_its_share():
    running = {"now": 0, "most": 0}
    release = asyncio.Event()

    async def tick(obj):
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await release.wait()
        running["now"] -= 1
        return TickResult(60)

    sched = Scheduler(tick, max_concurrent=200, tick_timeout=30)
    for i in range(1000):
        sched.upsert(canary("bench", f"c{i}"))
    for _ in range(100):
        await asyncio.sleep(0.01)
    # the code before: 40 (a fifth) while 160 slots stood idle
    assert running["most"] == 100
    release.set()
    await sched.stop()


async def hold(slots: FairSlots, ns: str, log: list[str], until: asyncio.Event) -> None:
    await slots.acquire(ns)
    log.append(ns)
    await until.wait()
    slots.release(ns)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_freed_slot_goes_first_to_a_namespace_below_its_share():
    slots = FairSlots(total=10, share=2, reserve=5)
    log: list[str] = []
    gates = [asyncio.Event() for _ in range(8)]
    tasks = [asyncio.create_task(hold(slots, "big", log, gates[i])) for i in range(8)]
    await settle()
    assert log.count("big") == 5 and slots.used == 5  # borrowed up to the reserve
    small = [asyncio.create_task(hold(slots, "small", log, asyncio.Event())) for _ in range(3)]
    await settle()
    assert log.count("small") == 2  # its share at once, from the reserve
    gates[0].set()
    await settle()
    # the freed slot: "small" is at its share and "big" above it; 4 stay free, fewer than the
    # reserve, so nobody borrows
    assert log.count("small") == 2 and log.count("big") == 5 and slots.used == 6
    for t in tasks + small:
        t.cancel()
    await asyncio.gather(*tasks, *small, return_exceptions=True)


async def test_namespaces_below_their_share_take_turns():
    slots = FairSlots(total=2, share=2, reserve=0)
    log: list[str] = []
    first = asyncio.Event()
    holders = [asyncio.create_task(hold(slots, "x", log, first)) for _ in range(2)]
    await settle()
    done = asyncio.Event()
    done.set()
    waiters = [asyncio.create_task(hold(slots, ns, log, done)) for ns in ("a", "a", "a", "b", "b")]
    await settle()
    first.set()
    await asyncio.gather(*holders, *waiters)
    assert log[2:] == ["a", "b", "a", "b", "a"]
    assert slots.used == 0 and slots.held == {}


async def test_a_cancelled_waiter_leaks_no_slot():
    slots = FairSlots(total=1, share=1, reserve=0)
    await slots.acquire("a")
    waiter = asyncio.create_task(slots.acquire("b"))
    await settle()
    slots.release("a")  # granted to b, whose task is cancelled before it runs
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert slots.used == 0
    queued = asyncio.create_task(slots.acquire("c"))
    await settle()
    assert queued.done() and slots.held == {"c": 1}
    lost = asyncio.create_task(slots.acquire("d"))  # queued, then cancelled while queued
    await settle()
    lost.cancel()
    await asyncio.gather(lost, return_exceptions=True)
    slots.release("c")
    assert slots.used == 0 and slots.held == {}


def test_bad_sizes():
    with pytest.raises(ValueError):
        FairSlots(0, 1)
    s = FairSlots(total=4, share=10, reserve=10)
    assert (s.share, s.reserve) == (4, 0)
