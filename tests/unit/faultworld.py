"""A whole cluster for fault injection: the real reconciler, workloads, Istio router, config
copies and HPA on the in-memory API server, with faults injected into the API traffic.

A fault hits the N-th write (counted from when it is armed) and is one of:

* ``crash-before``: the process dies before the request is sent;
* ``crash-after``: the request is applied, then the process dies before it sees the answer;
* ``error``: the API server answers 500 (the write did not happen);
* ``transport``: the connection drops (the write did not happen).

A crash is a ``BaseException`` that nothing in the operator catches. After it the operator is
"restarted": new adapters and routers, nothing carried over but what the API server holds. The
caches read the API server itself (a restart with fresh caches).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from canary.adapters.autoscaler import Autoscalers
from canary.adapters.configs import ConfigCopier, slim_config
from canary.adapters.events import EventRecorder
from canary.adapters.kube import Kube
from canary.adapters.workload import REVISION_ANNOTATION, Workloads
from canary.reconciler import Deps, TickResult, reconcile
from canary.routers import make_router
from canary.types import MetricResult
from tests.unit.fakeapi import FakeApiServer

NS = "test"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
FAULT_KINDS = ("crash-before", "crash-after", "error", "transport")


class Crash(BaseException):
    """The operator process died (SIGKILL, OOM, node loss)."""


@dataclass
class Fault:
    at: int  # the index of the write it hits, counted from when it was armed
    kind: str
    seen: int = 0
    fired: bool = False


class Faulty:
    """The API server's handler with a fault on one write."""

    def __init__(self, api: FakeApiServer):
        self.api = api
        self.fault: Fault | None = None
        self.writes: list[tuple[str, str]] = []  # (method, path) of every write that reached the server

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            fault = self.fault
            if fault is not None and not fault.fired:
                index = fault.seen
                fault.seen += 1
                if index == fault.at:
                    fault.fired = True
                    if fault.kind == "crash-before":
                        raise Crash(f"killed before {request.method} {request.url.path}")
                    if fault.kind == "error":
                        return httpx.Response(500, json={"kind": "Status", "reason": "InternalError",
                                                         "message": "injected", "code": 500})
                    if fault.kind == "transport":
                        raise httpx.ConnectError("injected: connection reset", request=request)
                    if fault.kind == "crash-after":
                        self.api.handle(request)
                        self.writes.append((request.method, request.url.path))
                        raise Crash(f"killed after {request.method} {request.url.path}")
            self.writes.append((request.method, request.url.path))
        return self.api.handle(request)


class LiveCaches:
    """Caches that always hold what the API server holds (a restart with fresh caches)."""

    def __init__(self, api: FakeApiServer):
        self.api = api

    def deployment(self, namespace: str, name: str) -> dict | None:
        return self.api.get("apps", namespace, "deployments", name)

    def metric_template(self, namespace: str, name: str) -> dict | None:
        return None

    def config(self, kind: str, namespace: str, name: str) -> dict | None:
        obj = self.api.get("", namespace, "configmaps" if kind == "configmap" else "secrets", name)
        return slim_config(obj) if obj is not None else None


def image(obj: dict | None) -> str:
    return ((((obj or {}).get("spec") or {}).get("template") or {}).get("spec") or {})["containers"][0]["image"]


@dataclass
class FaultWorld:
    strategy: str = "canary"  # canary | ab | bluegreen
    hpa: bool = False
    configs: bool = False
    mirror: bool = False  # bluegreen only: analyse on mirrored traffic
    advisory: bool = False  # analysis.advisory: decided and recorded, traffic never shifted
    api: FakeApiServer = field(default_factory=FakeApiServer)
    now: datetime = T0
    restarts: int = 0
    ticks: int = 0
    history: list[dict] = field(default_factory=list)  # (phase, weight, routes, primary image) after each tick

    def __post_init__(self) -> None:
        self.faulty = Faulty(self.api)
        self.caches = LiveCaches(self.api)
        self._put_objects()
        self.restart()

    # ---- the cluster -------------------------------------------------------------------------

    def _put_objects(self) -> None:
        pod: dict[str, Any] = {"containers": [{"name": "app", "image": "podinfo:1"}]}
        if self.configs:
            pod["containers"][0]["envFrom"] = [{"configMapRef": {"name": "cfg"}}]
            self.api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS},
                          "data": {"color": "blue"}})
        self.api.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": NS},
                      "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
                               "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": pod}}})
        if self.hpa:
            self.api.put({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "_plural": "horizontalpodautoscalers",
                          "metadata": {"name": "podinfo", "namespace": NS},
                          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                                   "minReplicas": 2, "maxReplicas": 4,
                                   "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                       "type": "Utilization", "averageUtilization": 80}}}]}})
        analysis: dict[str, Any] = {"interval": "10s", "threshold": 2,
                                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                                                 "interval": "1m"}]}
        if self.strategy == "canary":
            analysis.update(stepWeight=20, maxWeight=40)
        elif self.strategy == "ab":
            analysis.update(iterations=3, match=[{"headers": {"x-canary": {"exact": "yes"}}}])
        else:
            analysis.update(iterations=3, mirror=self.mirror or None)
        if self.advisory:
            analysis["advisory"] = True
        spec: dict[str, Any] = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                                "service": {"port": 9898}, "analysis": analysis}
        if self.hpa:
            spec["autoscalerRef"] = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}
        self.api.put({"apiVersion": "canary.dev/v1beta1", "kind": "Canary",
                      "metadata": {"name": "podinfo", "namespace": NS}, "spec": spec})

    def restart(self) -> None:
        """A new operator process: nothing but what the API server holds."""
        kube = Kube("https://fake.invalid", transport=httpx.MockTransport(self.faulty.handle))
        router = make_router("istio", kube)
        self.deps = Deps(kube=kube, workloads=Workloads(kube), router_for=lambda c: router,
                         events=EventRecorder(kube), clock=lambda: self.now, configs=ConfigCopier(kube),
                         autoscalers=Autoscalers(kube), run_metrics=self._metrics,
                         call_webhooks=_no_webhooks)

    async def _metrics(self, canary, templates, secrets) -> tuple[MetricResult, ...]:
        bad = "bad" in image(self.target)
        value = 40.0 if bad else 100.0
        return tuple(MetricResult(m.name, "q", value, min=99.0, ok=not bad) for m in canary.spec.analysis.metrics)

    # ---- reading it --------------------------------------------------------------------------

    @property
    def canary(self) -> dict:
        return self.api.get("canary.dev", NS, "canaries", "podinfo")

    @property
    def status(self) -> dict:
        return self.canary.get("status") or {}

    @property
    def target(self) -> dict:
        return self.api.get("apps", NS, "deployments", "podinfo")

    @property
    def primary(self) -> dict | None:
        return self.api.get("apps", NS, "deployments", "podinfo-primary")

    def primary_revision(self) -> str:
        p = self.primary
        return ((((p or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations", {}).get(
            REVISION_ANNOTATION, "")

    def routed(self) -> tuple[int, int] | None:
        vs = self.api.get("networking.istio.io", NS, "virtualservices", "podinfo")
        if vs is None:
            return None
        weights = {"podinfo-primary": 0, "podinfo-canary": 0}
        for route in (vs["spec"].get("http") or [])[-1:]:  # the catch-all rule
            for dest in route.get("route") or []:
                weights[dest["destination"]["host"]] = dest.get("weight", 100)
        return weights["podinfo-primary"], weights["podinfo-canary"]

    def canary_exposure(self) -> int:
        """Share of requests the canary may get: its weight, or any share through a match rule."""
        vs = self.api.get("networking.istio.io", NS, "virtualservices", "podinfo")
        if vs is None:
            return 0
        share = 0
        for route in vs["spec"].get("http") or []:
            for dest in route.get("route") or []:
                if dest["destination"]["host"] == "podinfo-canary":
                    share = max(share, dest.get("weight", 100))
        return share

    # ---- driving it --------------------------------------------------------------------------

    def arm(self, at: int, kind: str) -> None:
        self.faulty.fault = Fault(at=at, kind=kind)

    def release(self, img: str) -> None:
        old = self.api.objects[("apps", NS, "deployments", "podinfo")]
        new = copy.deepcopy(old)
        new["spec"]["template"]["spec"]["containers"][0]["image"] = img
        self.api._store("apps", NS, "deployments", old, new)

    def annotate(self, key: str, value: str) -> None:
        old = self.api.objects[("canary.dev", NS, "canaries", "podinfo")]
        new = copy.deepcopy(old)
        new["metadata"].setdefault("annotations", {})[key] = value
        self.api._store("canary.dev", NS, "canaries", old, new)

    async def tick(self) -> TickResult | None:
        """One tick; None when the process died in it (and was restarted)."""
        self.ticks += 1
        try:
            result = await reconcile(self.deps, self.canary, self.caches)
        except Crash:
            self.restarts += 1
            self.restart()
            self.now += timedelta(seconds=1)
            return None
        self.now += timedelta(seconds=min(max(result.wake_after, 0.5), 10.0))
        return result

    async def run_until(self, done, max_ticks: int = 200, check=None) -> int:
        for n in range(max_ticks):
            result = await self.tick()
            if check is not None:
                check(self, result)
            if done(self):
                return n
        raise AssertionError(f"not reached in {max_ticks} ticks: status {self.status.get('phase')}, "
                             f"routes {self.routed()}")


async def _no_webhooks(*args, **kwargs) -> list:
    return []
