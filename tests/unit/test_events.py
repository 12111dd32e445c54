"""Kubernetes Events: identical events are correlated into one Event with a count (bounded)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from canary.adapters.events import EventRecorder
from canary.adapters.kube import ApiError
from tests.unit.fakeapi import FakeApiServer

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CANARY = {"apiVersion": "canary.dev/v1beta1", "kind": "Canary",
          "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"}}


def events(api: FakeApiServer) -> list[dict]:
    return sorted((o for (g, ns, p, _), o in api.objects.items() if p == "events"),
                  key=lambda e: e["firstTimestamp"])


async def test_identical_events_make_one_event_with_a_count() -> None:
    api = FakeApiServer()
    rec = EventRecorder(api.kube())
    for i in range(900):  # a gate closed overnight at interval: 1m
        await rec.emit(CANARY, "Normal", "WaitingApproval", "Halt podinfo.test advancement waiting for approval gate",
                       T0 + timedelta(minutes=i))
    (ev,) = events(api)
    assert ev["count"] == 900
    assert ev["firstTimestamp"] == "2026-01-01T00:00:00Z" and ev["lastTimestamp"] == "2026-01-01T14:59:00Z"


async def test_different_events_are_kept_apart() -> None:
    api = FakeApiServer()
    rec = EventRecorder(api.kube())
    other = {"metadata": {**CANARY["metadata"], "uid": "u-2"}}  # the Canary deleted and created again
    await rec.emit(CANARY, "Normal", "AdvanceWeight", "Advance podinfo.test canary weight 10", T0)
    await rec.emit(CANARY, "Normal", "AdvanceWeight", "Advance podinfo.test canary weight 20", T0)
    await rec.emit(CANARY, "Warning", "AdvanceWeight", "Advance podinfo.test canary weight 20", T0)
    await rec.emit(other, "Normal", "AdvanceWeight", "Advance podinfo.test canary weight 20", T0)
    await rec.emit(CANARY, "Normal", "AdvanceWeight", "Advance podinfo.test canary weight 10", T0)
    assert sorted((e["type"], e["message"][-2:], e["involvedObject"]["uid"], e["count"]) for e in events(api)) == [
        ("Normal", "10", "u-1", 2), ("Normal", "20", "u-1", 1), ("Normal", "20", "u-2", 1), ("Warning", "20", "u-1", 1)]


async def test_memory_is_bounded_and_a_forgotten_event_is_posted_anew() -> None:
    api = FakeApiServer()
    rec = EventRecorder(api.kube(), max_keys=3)
    for i in range(10):
        await rec.emit(CANARY, "Normal", "R", f"message {i}", T0)
    assert rec.remembered == 3
    await rec.emit(CANARY, "Normal", "R", "message 0", T0)  # forgotten: a second Event
    assert [e["count"] for e in events(api) if e["message"] == "message 0"] == [1, 1]
    await rec.emit(CANARY, "Normal", "R", "message 9", T0)  # remembered: counted
    assert [e["count"] for e in events(api) if e["message"] == "message 9"] == [2]
    rec.forget("test", "podinfo")
    assert rec.remembered == 0


async def test_an_expired_event_is_created_again_and_errors_never_raise() -> None:
    api = FakeApiServer()
    kube = api.kube()
    rec = EventRecorder(kube)
    await rec.emit(CANARY, "Normal", "R", "m", T0)
    (ev,) = events(api)
    await kube.delete("v1", "events", "test", ev["metadata"]["name"])  # the API server's event TTL
    await rec.emit(CANARY, "Normal", "R", "m", T0 + timedelta(hours=2))
    (ev2,) = events(api)
    assert ev2["count"] == 1 and ev2["metadata"]["name"] != ev["metadata"]["name"]

    class Broken:
        async def create(self, *a, **k):
            raise ApiError(403, "Forbidden", "no")

        async def patch(self, *a, **k):
            raise ApiError(403, "Forbidden", "no")

    rec = EventRecorder(Broken())  # type: ignore[arg-type]
    await rec.emit(CANARY, "Normal", "R", "m", T0)
    await rec.emit(CANARY, "Normal", "R", "m", T0)
