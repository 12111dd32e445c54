"""Advisory releases (analysis.advisory) through the real reconciler on the in-memory API server,
with the operator killed, a write refused or the connection dropped at every write, good and bad
canaries, and a person's promote or abort at the end. After every tick, crashed or not:

A1  the VirtualService never routes or mirrors anything to the canary;
A2  the primary runs only the initial revision or the one a person promoted, copied once;
A3  the run waits for a person: it never ends on its own (no promotion, no rollback);
A4  the tally of the advisory verdict against the person's decision is counted exactly once.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary import commands
from tests.unit.faultworld import FAULT_KINDS, FaultWorld, image

TERMINAL = ("Succeeded", "Failed")


def never_routed(world: FaultWorld) -> None:
    vs = world.api.get("networking.istio.io", "test", "virtualservices", "podinfo")
    if vs is None:
        return
    assert world.canary_exposure() == 0, vs["spec"]
    assert not any(route.get("mirror") for route in vs["spec"].get("http") or []), vs["spec"]
    assert world.routed() == (100, 0)


async def advisory_release(world: FaultWorld, img: str, decision: str, faults: list[tuple[int, str]],
                           max_ticks: int = 120) -> dict:
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    initial = world.primary_revision()
    world.release(img)
    pending = list(faults)
    if pending:
        world.arm(*pending.pop(0))
    decided = False
    promoted: list[str] = []
    settled = 0
    for _ in range(max_ticks):
        result = await world.tick()
        never_routed(world)  # A1, also right after a crash
        if result is not None:
            assert world.status.get("canaryWeight", 0) == 0  # I6: the routed weight, never the virtual one
        if world.faulty.fault and world.faulty.fault.fired and pending:
            world.arm(*pending.pop(0))
        primary = world.primary_revision()
        if primary != initial and primary not in promoted:
            promoted.append(primary)
        status = world.status
        verdict = (status.get("advisory") or {}).get("verdict")
        if not decided:
            assert status.get("phase") not in TERMINAL, status.get("phase")  # A3
            assert promoted == [], "promoted before a person decided"  # A2
            if verdict is not None and result is not None:
                world.annotate(f"canary.dev/{decision}", commands.encode("alice", reason="a person decides"))
                decided = True
            continue
        if status.get("phase") in TERMINAL and result is not None:
            settled += 1
            if settled >= 3:
                break
        else:
            settled = 0
    else:
        raise AssertionError(f"no outcome: phase {world.status.get('phase')}, decided {decided}")
    status = world.status
    if decision == "promote":
        assert status["phase"] == "Succeeded"
        assert promoted == [status["lastAppliedSpec"]] and world.primary_revision() == status["lastPromotedSpec"]
    else:
        assert status["phase"] == "Failed" and promoted == [] and "bad" not in image(world.primary)
        assert world.target["spec"]["replicas"] == 0
    return status


def expect_tally(status: dict, good: bool, decision: str) -> None:
    tallies = {t["check"]: t for t in status["advisory"]["tallies"]}
    tally = tallies["(advisory)"]
    agreed = good == (decision == "promote")
    assert (tally["agreed"], tally["disagreed"]) == ((1, 0) if agreed else (0, 1)), tally  # A4


CASES = [(True, "abort"), (False, "promote")]


@pytest.mark.parametrize("good,decision", CASES, ids=["good-aborted", "bad-promoted"])
@pytest.mark.parametrize("kind", ["crash-after", "crash-before", "error"])
def test_every_write_of_an_advisory_release_as_the_crash_point(good, decision, kind):
    img = "podinfo:2" if good else "podinfo:bad"
    clean = FaultWorld(advisory=True)
    asyncio.run(advisory_release(clean, img, decision, []))
    total = len(clean.faulty.writes)
    for at in range(0, total, 2 if kind == "crash-before" else 1):
        world = FaultWorld(advisory=True)
        status = asyncio.run(advisory_release(world, img, decision, [(at, kind)]))
        expect_tally(status, good, decision)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(["canary", "ab", "bluegreen"]), good=st.booleans(),
       decision=st.sampled_from(["promote", "abort"]), hpa=st.booleans(), mirror=st.booleans(),
       faults=st.lists(st.tuples(st.integers(0, 30), st.sampled_from(FAULT_KINDS)), min_size=1, max_size=3))
def test_advisory_releases_survive_faults(strategy, good, decision, hpa, mirror, faults):
    world = FaultWorld(strategy=strategy, hpa=hpa, mirror=mirror, advisory=True)
    status = asyncio.run(advisory_release(world, "podinfo:2" if good else "podinfo:bad", decision, faults))
    expect_tally(status, good, decision)
