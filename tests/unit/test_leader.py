"""Leader election (canary/leader.py) on an in-memory API server, with short durations, and the
scheduler's pause/resume/drain that it drives."""

from __future__ import annotations

import asyncio
import time

import pytest

from canary.leader import LeaderElector, Record, default_namespace, micro_time
from canary.scheduler import Scheduler
from tests.unit.fakeapi import FakeApiServer

# lease 1 s, renew deadline 0.6 s, retry 0.1 s: about the production ratios (15/10/2), faster
FAST = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.1}


class Track:
    """Leadership intervals of several electors, on one clock."""

    def __init__(self):
        self.intervals: dict[str, list[list[float]]] = {}

    def callbacks(self, who: str) -> dict:
        def started():
            self.intervals.setdefault(who, []).append([time.monotonic(), float("inf")])

        def stopped():
            self.intervals[who][-1][1] = time.monotonic()

        return {"on_started_leading": started, "on_stopped_leading": stopped}

    def leading(self, who: str) -> bool:
        iv = self.intervals.get(who)
        return bool(iv) and iv[-1][1] == float("inf")

    def overlaps(self) -> list:
        flat = [(a, b, who) for who, ivs in self.intervals.items() for a, b in ivs]
        flat.sort()
        return [(x, y) for x, y in zip(flat, flat[1:]) if y[0] < x[1] and x[2] != y[2]]


async def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def elector(api: FakeApiServer, who: str, track: Track, **kw) -> LeaderElector:
    return LeaderElector(api.kube(), "ops", "canary-operator-leader", who, **{**FAST, **kw},
                         **track.callbacks(who))


async def test_a_single_candidate_creates_and_renews_the_lease():
    api, track = FakeApiServer(), Track()
    e = elector(api, "a", track)
    task = asyncio.create_task(e.run())
    await wait_for(lambda: e.is_leader, 2, "leadership")
    lease = api.get("coordination.k8s.io", "ops", "leases", "canary-operator-leader")
    assert lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseDurationSeconds"] == 1
    first = lease["spec"]["renewTime"]
    await asyncio.sleep(0.35)
    assert api.get("coordination.k8s.io", "ops", "leases", "canary-operator-leader")["spec"]["renewTime"] != first
    assert await e.release()
    lease = api.get("coordination.k8s.io", "ops", "leases", "canary-operator-leader")
    assert "holderIdentity" not in lease["spec"]
    await asyncio.wait_for(task, 2)
    assert not track.leading("a")
    verbs = {(r.resource, r.verb) for r in api.requests if r.group == "coordination.k8s.io"}
    assert verbs == {("leases", "get"), ("leases", "create"), ("leases", "update")}


async def test_only_one_of_two_leads_and_a_release_hands_over_at_once():
    api, track = FakeApiServer(), Track()
    a, b = elector(api, "a", track), elector(api, "b", track)
    ta = asyncio.create_task(a.run())
    await wait_for(lambda: a.is_leader, 2, "a leads")
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(1.2)  # more than a lease duration: b must still wait, a renews
    assert a.is_leader and not b.is_leader and not track.leading("b")
    released = time.monotonic()
    await a.release()
    await wait_for(lambda: b.is_leader, 2, "b takes over")
    assert time.monotonic() - released < 0.5  # one retry period or so, not a lease duration
    assert track.overlaps() == []
    await b.release()
    await asyncio.gather(ta, tb)


async def test_a_killed_leader_is_replaced_after_the_lease_duration():
    api, track = FakeApiServer(), Track()
    a, b = elector(api, "a", track), elector(api, "b", track)
    ta = asyncio.create_task(a.run())
    await wait_for(lambda: a.is_leader, 2, "a leads")
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(0.3)
    ta.cancel()  # like kill -9: no release, the lease stays with "a"
    killed = time.monotonic()
    await asyncio.gather(ta, return_exceptions=True)
    await wait_for(lambda: b.is_leader, 3, "b takes over")
    took = time.monotonic() - killed
    assert 0.7 <= took < 1.0 + 0.5, took  # a lease duration after b last saw a renewal, plus a retry
    await b.release()
    await tb


async def test_a_leader_that_cannot_renew_stops_before_anyone_else_can_lead():
    api, track = FakeApiServer(), Track()
    a = elector(api, "a", track)
    ta = asyncio.create_task(a.run())
    await wait_for(lambda: a.is_leader, 2, "a leads")
    b = LeaderElector(api.kube(), "ops", "canary-operator-leader", "b", **FAST, **track.callbacks("b"))
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(0.2)
    # a's renewals now fail (its API server connection broke); b can still write
    a.kube._http._transport = _Failing()
    await wait_for(lambda: b.is_leader, 3, "b takes over")
    assert not track.leading("a")
    assert track.overlaps() == [], track.intervals
    a_end = track.intervals["a"][-1][1]
    b_start = track.intervals["b"][-1][0]
    assert b_start - a_end >= 1.0 - 0.6 - 0.2  # the margin: lease duration - renew deadline
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    await b.release()
    await tb


async def test_a_conflicting_write_loses_the_race():
    api = FakeApiServer()
    a = LeaderElector(api.kube(), "ops", "l", "a", **FAST)
    b = LeaderElector(api.kube(), "ops", "l", "b", **FAST)
    assert await a.try_acquire_or_renew()
    lease = api.get("coordination.k8s.io", "ops", "leases", "l")
    # b saw the lease long ago and believes it expired, but a renews in between: b's write is stale
    b._observed, b._observed_at = Record.of(lease), time.monotonic() - 10
    await a.try_acquire_or_renew()
    orig_get = b.kube.get

    async def stale_get(*args, **kw):
        return lease

    b.kube.get = stale_get
    assert not await b.try_acquire_or_renew()
    b.kube.get = orig_get
    assert api.get("coordination.k8s.io", "ops", "leases", "l")["spec"]["holderIdentity"] == "a"


def test_helpers(tmp_path):
    f = tmp_path / "ns"
    f.write_text("canary-system\n")
    assert default_namespace(str(f)) == "canary-system"
    assert default_namespace(str(tmp_path / "missing")) == "default"
    from datetime import datetime, timezone

    assert micro_time(datetime(2024, 5, 1, 12, 0, 0, 1234, tzinfo=timezone.utc)) == "2024-05-01T12:00:00.001234Z"
    with pytest.raises(ValueError):
        LeaderElector(None, "ns", lease_duration=5, renew_deadline=10, retry_period=2)


class _Failing:
    async def handle_async_request(self, request):
        raise OSError("connection refused")


# ---- the scheduler's gate ---------------------------------------------------------------


class _Result:
    def __init__(self, wake_after=0.05):
        self.wake_after = wake_after
        self.written = None


def canary_obj(name: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1", "generation": 1},
            "spec": {"targetRef": {"name": name}}}


async def test_a_paused_scheduler_starts_no_tick_and_cancels_the_running_ones():
    started, finished, cancelled = [], [], []

    async def tick(obj):
        started.append(obj["metadata"]["name"])
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            cancelled.append(obj["metadata"]["name"])
            raise
        finished.append(obj["metadata"]["name"])
        return _Result(10)

    s = Scheduler(tick)
    s.pause()
    s.upsert(canary_obj("a"))
    await asyncio.sleep(0.2)
    assert started == [] and s.in_flight == 0
    s.resume()
    await wait_for(lambda: started == ["a"], 1, "a tick once resumed")
    assert s.pause() == 1  # the running tick is cancelled
    await wait_for(lambda: cancelled == ["a"], 1, "cancellation")
    await asyncio.sleep(0.2)
    assert started == ["a"] and finished == []  # nothing new while paused
    s.resume()
    # (the loop counts the tick a moment after the tick returns: wait for both)
    await wait_for(lambda: finished == ["a"] and s.ticks == 1, 2, "the tick again after resuming")
    await s.stop()


async def test_drain_lets_running_ticks_finish_within_the_timeout():
    finished = []

    async def tick(obj):
        await asyncio.sleep(0.2 if obj["metadata"]["name"] == "quick" else 5)
        finished.append(obj["metadata"]["name"])
        return _Result(10)

    s = Scheduler(tick)
    s.upsert(canary_obj("quick"))
    await asyncio.sleep(0.05)
    assert s.in_flight == 1
    assert await s.drain(timeout=2) is True
    assert finished == ["quick"]

    s = Scheduler(tick)
    s.upsert(canary_obj("slow"))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    assert await s.drain(timeout=0.3) is False  # cut short
    assert time.monotonic() - t0 < 1
    assert finished == ["quick"]
    s.resume()  # a closing scheduler does not start again
    assert not s.active


async def test_a_candidate_holding_off_watches_but_never_writes():
    """canary/shards.py: a replica that gave a shard back holds off claiming it; it must still
    watch the Lease, so that a dead holder's expiry counts from the first sighting."""
    api, track = FakeApiServer(), Track()
    e = elector(api, "a", track)
    e.hold_off_until = time.monotonic() + 0.5
    t = asyncio.create_task(e.run())
    try:
        await asyncio.sleep(0.3)
        assert await api.kube().get("coordination.k8s.io/v1", "leases", "ops", "canary-operator-leader") is None
        assert not e.is_leader
        await wait_for(lambda: e.is_leader, 2, "a claims after the hold-off")
    finally:
        e.stop()
        await asyncio.gather(t, return_exceptions=True)
