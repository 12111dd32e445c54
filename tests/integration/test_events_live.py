"""Event correlation on the testbed's real API server: identical events become one Event whose
count and lastTimestamp move (a merge PATCH the API server accepts), an Event deleted (the
API server's TTL) is posted anew, and a different event is its own Event."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from canary.adapters.events import EventRecorder
from canary.adapters.kube import Kube

pytestmark = pytest.mark.testbed

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WAIT = "Halt podinfo.{ns} advancement waiting for approval gate"


@pytest.fixture
async def kube(testbed):
    k = Kube.from_config(testbed["operator_kubeconfig"])
    yield k
    await k.aclose()


async def canary_events(kube: Kube, ns: str) -> list[dict]:
    items = await kube.list("v1", "events", ns)
    return sorted((e for e in items if e["involvedObject"]["name"] == "podinfo"), key=lambda e: e["message"])


async def test_a_waiting_period_is_one_event(kube: Kube, namespace: str) -> None:
    ns = namespace
    canary = {"apiVersion": "canary.dev/v1beta1", "kind": "Canary",
              "metadata": {"name": "podinfo", "namespace": ns, "uid": "7e0c5d4a-0000-4000-8000-000000000001"}}
    rec = EventRecorder(kube)
    for minute in range(60):
        await rec.emit(canary, "Normal", "WaitingApproval", WAIT.format(ns=ns), T0 + timedelta(minutes=minute))
    await rec.emit(canary, "Normal", "StartAnalysis", f"Starting canary analysis for podinfo.{ns}", T0 + timedelta(hours=1))
    evs = await canary_events(kube, ns)
    assert [(e["reason"], e["count"]) for e in evs] == [("WaitingApproval", 60), ("StartAnalysis", 1)]
    wait = evs[0]
    assert wait["firstTimestamp"] == "2026-01-01T00:00:00Z" and wait["lastTimestamp"] == "2026-01-01T00:59:00Z"

    # the Event expires (TTL) or is deleted: the next identical event is posted anew
    await kube.delete("v1", "events", ns, wait["metadata"]["name"])
    await rec.emit(canary, "Normal", "WaitingApproval", WAIT.format(ns=ns), T0 + timedelta(hours=2))
    evs = await canary_events(kube, ns)
    assert [(e["reason"], e["count"]) for e in evs] == [("WaitingApproval", 1), ("StartAnalysis", 1)]
    assert evs[0]["metadata"]["name"] != wait["metadata"]["name"]
