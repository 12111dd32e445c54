"""Fault injection: whole releases through the real reconciler on the in-memory API server,
with the operator killed, a write refused or the connection dropped at every point, and the
release's invariants checked after every tick (issue 9):

I1  the primary only runs the initial revision or one that was accepted (the analysis decided
    Promoting, or skipAnalysis, or a person's promote);
I2  a revision decided Failed gets no traffic from the first clean tick after the decision on;
I3  each accepted revision is copied into the primary exactly once;
I4  every release ends Succeeded or Failed within a bounded number of ticks;
I5  abort is honoured in every phase a run can be in, stalls included;
I6  status.canaryWeight equals the routed weight at the end of every clean tick.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary import commands
from canary.models import Canary
from canary.routers.istio import read_routes
from tests.unit.faultworld import FAULT_KINDS, NS, FaultWorld, image

TERMINAL = ("Succeeded", "Failed")
ACCEPTING = ("Promoting", "Finalising", "Succeeded")


class Invariants:
    def __init__(self, world: FaultWorld):
        self.world = world
        self.accepted = {world.primary_revision()}
        self.rejected: set[str] = set()
        self.promotions: dict[str, int] = {}
        self.last_primary = world.primary_revision()

    def after_tick(self, world: FaultWorld, result, fired_before: bool) -> None:
        status = world.status
        phase, rev = status.get("phase"), status.get("lastAppliedSpec")
        clean = result is not None and not (world.faulty.fault and world.faulty.fault.fired and not fired_before)
        if phase in ACCEPTING and rev:
            self.accepted.add(rev)
        # I1: the primary runs nothing that was not accepted
        primary = world.primary_revision()
        assert primary in self.accepted, f"primary runs {primary}, accepted {self.accepted} (phase {phase})"
        assert "bad" not in image(world.primary), "a rejected image reached the primary"
        # I3: each accepted revision is copied once
        if primary != self.last_primary:
            self.promotions[primary] = self.promotions.get(primary, 0) + 1
            assert self.promotions[primary] == 1, f"revision {primary} promoted twice"
            self.last_primary = primary
        # I2: a Failed revision gets no traffic once a clean tick has run
        if phase == "Failed" and rev and "primary-readiness" not in str(status.get("lastFailure")):
            self.rejected.add(rev)
        if clean and self.rejected and world.target and image(world.target) != "podinfo:1":
            if phase == "Failed":
                assert world.canary_exposure() == 0, f"failed canary still routed: {world.routed()}"
        # I6: the status tells the routed weight
        if clean:
            vs = world.api.get("networking.istio.io", NS, "virtualservices", "podinfo")
            if vs is not None:
                routes = read_routes(Canary.from_obj(world.canary), vs)
                if routes is not None:
                    assert status.get("canaryWeight", 0) == routes.canary, (status.get("canaryWeight"), routes)


async def release_with_faults(world: FaultWorld, img: str, faults: list[tuple[int, str]],
                              max_ticks: int = 120) -> Invariants:
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    inv = Invariants(world)
    world.release(img)
    pending = list(faults)
    if pending:
        world.arm(*pending.pop(0))
    settled = 0
    for _ in range(max_ticks):
        fired_before = bool(world.faulty.fault and world.faulty.fault.fired)
        result = await world.tick()
        inv.after_tick(world, result, fired_before)
        if world.faulty.fault and world.faulty.fault.fired and pending:
            world.arm(*pending.pop(0))
        if world.status.get("phase") in TERMINAL and world.status.get("lastAppliedSpec") and result is not None:
            settled += 1
            if settled >= 3:
                return inv
        else:
            settled = 0
    raise AssertionError(f"I4: no outcome after {max_ticks} ticks: phase {world.status.get('phase')}")


def expect_outcome(world: FaultWorld, inv: Invariants, good: bool) -> None:
    status = world.status
    if good:
        assert status["phase"] == "Succeeded", status.get("lastFailure")
        assert inv.promotions.get(status["lastAppliedSpec"]) == 1  # I3: exactly once
        assert world.primary_revision() == status["lastPromotedSpec"] == status["lastAppliedSpec"]
    else:
        assert status["phase"] == "Failed"
        assert world.canary_exposure() == 0
        assert world.target["spec"]["replicas"] == 0
    assert world.routed() == (100, 0)
    assert status["canaryWeight"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(["canary", "ab", "bluegreen"]), good=st.booleans(),
       hpa=st.booleans(), configs=st.booleans(),
       faults=st.lists(st.tuples(st.integers(0, 24), st.sampled_from(FAULT_KINDS)), min_size=1, max_size=3))
def test_releases_survive_a_fault_at_any_write(strategy, good, hpa, configs, faults):
    world = FaultWorld(strategy=strategy, hpa=hpa, configs=configs)
    inv = asyncio.run(release_with_faults(world, "podinfo:2" if good else "podinfo:bad", faults))
    expect_outcome(world, inv, good)


@pytest.mark.parametrize("good", [True, False])
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_write_of_a_release_as_the_crash_point(good, kind, strategy="canary"):
    """Exhaustive over the write index: the fault hits the 1st, 2nd, ... write of the release."""
    clean = FaultWorld(strategy=strategy)
    asyncio.run(release_with_faults(clean, "podinfo:2" if good else "podinfo:bad", []))
    total = len(clean.faulty.writes)
    for at in range(total):
        world = FaultWorld(strategy=strategy)
        inv = asyncio.run(release_with_faults(world, "podinfo:2" if good else "podinfo:bad", [(at, kind)]))
        expect_outcome(world, inv, good)


# ---- the defects of issue 9, each at its own crash point -------------------------------------


def _index_of_write(world_factory, img: str, predicate) -> int:
    """The index (counted from the release) of the first write for which predicate(method, path)."""
    clean = world_factory()
    asyncio.run(clean.run_until(lambda w: w.status.get("phase") == "Initialized"))
    start = len(clean.faulty.writes)
    clean.release(img)
    asyncio.run(clean.run_until(lambda w: w.status.get("phase") in TERMINAL and w.status.get("lastAppliedSpec")
                                and w.status.get("phase") != "Initialized"))
    for i, (method, path) in enumerate(clean.faulty.writes[start:]):
        if predicate(method, path):
            return i
    raise AssertionError("no such write")


def test_half_applied_rollback_never_exposes_the_failing_canary_again():
    """9.3: killed right after the rollback routed 100/0 (before anything else): the next tick
    must not take weight 0 for a first step and route stepWeight to the failing canary."""
    world = FaultWorld()
    clean = FaultWorld()

    async def go():
        await clean.run_until(lambda w: w.status.get("phase") == "Initialized")
        start = len(clean.faulty.writes)
        clean.release("podinfo:bad")
        await clean.run_until(lambda w: w.status.get("phase") == "Failed")
        writes = clean.faulty.writes[start:]
        # the last VirtualService write of the release is the rollback's 100/0
        return max(i for i, (m, p) in enumerate(writes) if "virtualservices" in p and m == "PUT")

    at = asyncio.run(go())

    async def crash_then_watch():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:bad")
        world.arm(at, "crash-after")
        exposure_after_crash = []
        for _ in range(40):
            await world.tick()
            if world.faulty.fault.fired:
                exposure_after_crash.append(world.canary_exposure())
        return exposure_after_crash

    exposure = asyncio.run(crash_then_watch())
    assert exposure and max(exposure) == 0, f"the failing canary was routed again: {exposure}"
    assert world.status["phase"] == "Failed"


def test_an_image_pushed_during_the_deciding_tick_is_never_promoted_unanalysed():
    """9.1: the target changes while the last checks run; Promote must not copy the new image."""
    world = FaultWorld()

    async def go():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        inv = Invariants(world)
        world.release("podinfo:2")
        pushed = {"done": False}
        analysed = world._metrics

        async def metrics(canary, templates, secrets):
            out = await analysed(canary, templates, secrets)
            # the check that completes the analysis (the canary is at max weight): push an image
            if world.status.get("canaryWeight") == 40 and not pushed["done"]:
                pushed["done"] = True
                world.release("podinfo:unanalysed")
            return out

        for _ in range(60):
            world.deps.run_metrics = metrics
            result = await world.tick()
            inv.after_tick(world, result, False)  # I1: the primary runs only accepted revisions
            if pushed["done"] and world.status.get("phase") == "Succeeded" and \
                    world.status.get("lastAppliedSpec") == world.primary_revision():
                break
        return pushed["done"], inv

    done, inv = asyncio.run(go())
    assert done
    # podinfo:2 was never copied (its template was gone); the pushed image was analysed as a
    # release of its own and promoted only after that
    assert image(world.primary) == "podinfo:unanalysed"
    assert list(inv.promotions) == [world.status["lastAppliedSpec"]]
    ledger = Canary.from_obj(world.canary).status.ledger or []
    assert [e.action for e in ledger].count("restart") == 1


def test_a_failure_after_the_primary_copy_finishes_the_promotion():
    """9.2: the HPA reconcile after the copy fails (the HPA was deleted meanwhile): the primary
    runs the analysed revision, so the phase must move on from Progressing; a later failed check
    must never route all traffic to a primary that was decided Failed."""
    world = FaultWorld(hpa=True)

    async def go():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:2")
        await world.run_until(lambda w: w.status.get("canaryWeight") == 40)
        del world.api.objects[("autoscaling", NS, "horizontalpodautoscalers", "podinfo")]
        for _ in range(8):
            await world.tick()
        return world.status

    status = asyncio.run(go())
    assert world.primary_revision() == status["lastAppliedSpec"]
    assert status["phase"] in ("Promoting", "Finalising", "Succeeded"), status["phase"]


def test_an_abort_during_a_stall_is_honoured():
    """9.5: a missing tracked ConfigMap stalls the run (observation error): abort still rolls it
    back, with all traffic on the primary."""
    world = FaultWorld(configs=True)

    async def go():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:2")
        await world.run_until(lambda w: w.status.get("canaryWeight") == 20)
        del world.api.objects[("", NS, "configmaps", "cfg")]
        await world.tick()
        assert any(c["type"] == "Stalled" for c in world.status.get("conditions", []))
        world.annotate("canary.dev/abort", commands.encode("alice", reason="stuck"))
        await world.run_until(lambda w: w.status.get("phase") == "Failed", max_ticks=5)
        await world.tick()

    asyncio.run(go())
    assert world.routed() == (100, 0)
    assert world.status["lastFailure"]["check"] == "abort"


def test_a_stall_ends_at_the_progress_deadline_with_traffic_on_the_primary():
    world = FaultWorld(configs=True)

    async def go():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:2")
        await world.run_until(lambda w: w.status.get("canaryWeight") == 20)
        del world.api.objects[("", NS, "configmaps", "cfg")]
        await world.run_until(lambda w: w.status.get("phase") == "Failed", max_ticks=100)
        await world.tick()

    asyncio.run(go())
    assert world.routed() == (100, 0)
    assert world.status["lastFailure"]["check"] == "progress-deadline"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(["canary", "ab", "bluegreen"]), when=st.integers(0, 12),
       fault=st.tuples(st.integers(0, 12), st.sampled_from(FAULT_KINDS)))
def test_abort_is_honoured_in_every_phase(strategy, when, fault):
    """I5: abort at any tick of a run (with a fault somewhere) ends it Failed, traffic on the
    primary; once the promotion has started it is refused and the release succeeds."""
    world = FaultWorld(strategy=strategy)

    async def go():
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:2")
        world.arm(*fault)
        for _ in range(when):
            await world.tick()
        phase = world.status.get("phase")
        world.annotate("canary.dev/abort", commands.encode("bob", reason="i5"))
        await world.run_until(lambda w: w.status.get("phase") in TERMINAL
                              and "canary.dev/abort" not in (w.canary["metadata"].get("annotations") or {}),
                              max_ticks=60)
        for _ in range(3):
            await world.tick()
        return phase

    phase = asyncio.run(go())
    status = world.status
    if status["phase"] == "Failed":
        assert status["lastFailure"]["check"] == "abort"
        assert world.canary_exposure() == 0 and world.routed() == (100, 0)
    else:
        assert phase in ("Promoting", "Finalising", "Succeeded") or status["lastCommand"]["result"] == "Rejected"
