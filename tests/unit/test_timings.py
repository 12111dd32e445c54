"""Where a tick's time goes (issue 12): phase histograms fed by the reconciler, the scheduler's
queue wait and the Kube client's request latencies."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from canary.metrics import TICK_PHASES, OperatorMetrics, api_resource
from canary.reconciler import TickResult
from canary.scheduler import Scheduler
from tests.unit.faultworld import FaultWorld


def count(m: OperatorMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name + "_count", labels) or 0.0


@pytest.mark.parametrize("path,resource", [
    ("/apis/canary.dev/v1beta1/namespaces/shop/canaries/podinfo/status", "canaries/status"),
    ("/apis/apps/v1/namespaces/shop/deployments/podinfo", "deployments"),
    ("/api/v1/namespaces/shop/events", "events"),
    ("/apis/coordination.k8s.io/v1/namespaces/ops/leases/canary-operator", "leases"),
    ("/api/v1/namespaces/shop", "namespaces"),
    ("/apis/networking.istio.io", "discovery"),
    ("/healthz", "other"),
])
def test_api_resource_from_path(path: str, resource: str) -> None:
    assert api_resource(path) == resource


def test_a_whole_release_is_timed_phase_by_phase() -> None:
    m = OperatorMetrics()
    world = FaultWorld()
    world.deps = dataclasses.replace(world.deps, phase=m.time_phase)
    world.deps.kube.on_request = m.observe_api

    async def go() -> None:
        await world.run_until(lambda w: w.status.get("phase") == "Initialized")
        world.release("podinfo:2")
        await world.run_until(lambda w: w.status.get("phase") == "Succeeded")

    asyncio.run(go())
    for phase in ("observe", "metrics", "status", "effects", "notify"):
        assert count(m, "canary_operator_tick_phase_duration_seconds", phase=phase) > 0, phase
    # every phase has a series from the start (a dashboard sees 0, not "no data")
    for phase in TICK_PHASES:
        assert m.registry.get_sample_value("canary_operator_tick_phase_duration_seconds_count", {"phase": phase}) is not None
    assert count(m, "canary_operator_api_request_duration_seconds", verb="patch", resource="canaries/status") > 0
    assert sum(count(m, "canary_operator_api_request_duration_seconds", verb=v, resource="virtualservices")
               for v in ("create", "update", "patch")) > 0
    total = sum(world.deps.kube.requests.values())
    timed = sum(s.value for metric in m.registry.collect() if metric.name == "canary_operator_api_request_duration_seconds"
                for s in metric.samples if s.name.endswith("_count"))
    assert timed == total  # every request sent is timed once


def test_queue_wait_is_reported_per_tick() -> None:
    waits: list[float] = []

    async def go() -> None:
        gate = asyncio.Event()

        async def tick(obj):
            await gate.wait()
            return TickResult(wake_after=60)

        s = Scheduler(tick, max_concurrent=1, max_per_namespace=1)
        s.on_queue_wait = waits.append
        for n in ("a", "b"):
            s.upsert({"metadata": {"namespace": "ns", "name": n, "resourceVersion": "1"}, "spec": {}})
        await asyncio.sleep(0.2)
        gate.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(waits) == 2:
                break
        await s.stop()

    asyncio.run(go())
    assert len(waits) == 2
    assert min(waits) < 0.05 and max(waits) >= 0.15  # the second waited for the first's slot
