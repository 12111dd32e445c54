"""The operator's own Prometheus metrics (served on --metrics-port at /metrics).

Labels stay low-cardinality: a Canary's namespace and name, and a phase or check name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from canary.models import Canary, CanaryStatus
from canary.types import Phase

PHASES = [p.value for p in Phase if p.value]


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Gauge("canary_operator_info", "Operator build and settings", ["version", "mesh_provider"], registry=r)
        self.phase = Gauge("canary_phase", "1 for the Canary's current phase, 0 for the others",
                           ["namespace", "name", "phase"], registry=r)
        self.weight = Gauge("canary_weight", "Traffic weight routed to the canary (percent)",
                            ["namespace", "name"], registry=r)
        self.failed_checks = Gauge("canary_failed_checks", "Failed checks of the current analysis",
                                   ["namespace", "name"], registry=r)
        self.promotions = Counter("canary_promotions_total", "Releases promoted", ["namespace", "name"], registry=r)
        self.rollbacks = Counter("canary_rollbacks_total", "Releases rolled back", ["namespace", "name"], registry=r)
        self.tick_seconds = Histogram("canary_reconcile_duration_seconds", "Duration of one Canary tick",
                                      registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.canaries = Gauge("canary_canaries", "Canaries handled by this operator", registry=r)
        self._last_phase: dict[tuple[str, str], str] = {}

    def observe(self, canary: Canary, status: CanaryStatus) -> None:
        key = (canary.namespace, canary.name)
        phase = status.phase.value
        prev = self._last_phase.get(key)
        if prev != phase:
            for p in PHASES:
                self.phase.labels(*key, p).set(1 if p == phase else 0)
            if prev is not None and phase == Phase.SUCCEEDED.value:
                self.promotions.labels(*key).inc()
            if prev is not None and phase == Phase.FAILED.value:
                self.rollbacks.labels(*key).inc()
            self._last_phase[key] = phase
        self.weight.labels(*key).set(status.canary_weight)
        self.failed_checks.labels(*key).set(status.failed_checks)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._last_phase.pop(key, None)
        for p in PHASES:
            try:
                self.phase.remove(namespace, name, p)
            except KeyError:
                pass
        for g in (self.weight, self.failed_checks):
            try:
                g.remove(namespace, name)
            except KeyError:
                pass

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
