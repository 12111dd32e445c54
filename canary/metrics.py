"""The operator's own Prometheus metrics (served on --metrics-port at /metrics).

Labels stay low-cardinality: a Canary's namespace and name, and a phase, check, bound, verb or
alert provider type. docs/metrics.md lists every series and how to use it.

What feeds what:

* ``observe(canary, status)`` is the reconciler's ``on_decision`` hook: ``canary.status`` is the
  status the tick started from and ``status`` the one it decided, so phase transitions
  (promotions, rollbacks, analysis durations) are read from the pair, not from memory, and are
  counted once even across operator restarts.
* ``observe_checks(canary, results)`` records each metric check's last value and thresholds;
  ``observe_metric_run(canary, awaitable)`` wraps a run of the metric checks to also time it
  and count the queries that failed or found no data.
* ``bind_kube(kube)`` and ``bind_scheduler(scheduler)`` expose counters that those objects keep
  themselves (API requests by verb, ticks waiting for a slot), read at scrape time.

Every series about the operator's own health starts with ``canary_operator_`` (the process and
Python runtime collectors add ``process_*`` and ``python_*``); series about Canaries start with
``canary_``; ``flagger_*`` series repeat Flagger's for existing dashboards and rules. No
``*_created`` series are exported (they double the series count and no dashboard reads them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from canary.models import Canary, CanaryStatus
from canary.types import MetricResult, Phase

PHASES = [p.value for p in Phase if p.value]
PHASE_CODE = {p.value: i for i, p in enumerate(Phase)}  # canary_phase_code: "" 0, Initializing 1, ... Terminated 11
RUN_PHASES = {Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING}
FLAGGER_STRATEGY = {"canary": "canary", "bluegreen": "blue-green", "ab": "ab-testing"}
ALL_CHECKS = "(all)"

Key = tuple[str, str]

TICK_PHASES = ("queue", "observe", "webhooks", "metrics", "status", "effects", "notify")
TIMING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def api_resource(path: str) -> str:
    """The resource (and subresource) of an API path: "canaries/status", "deployments", "leases"."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return "other"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return "discovery"
    return rest[0] + ("/" + rest[2] if len(rest) >= 3 else "")


def flagger_status(phase: Phase | str) -> int:
    """flagger_canary_status: 0 Progressing, 2 Failed, 1 every other phase (as Flagger)."""
    value = getattr(phase, "value", phase)
    if value == Phase.PROGRESSING.value:
        return 0
    if value == Phase.FAILED.value:
        return 2
    return 1


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None


class _Bound(Collector):
    """Series read at scrape time from objects the operator owns (the Kube client)."""

    def __init__(self, metrics: OperatorMetrics):
        self.m = metrics

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily("canary_operator_api_requests", "Kubernetes API requests sent, by verb",
                                       labels=["verb"])
        for verb, count in sorted(_snapshot(self.m._kube_requests()).items()):
            requests.add_metric([verb], float(count))
        yield requests
        total = GaugeMetricFamily("flagger_canary_total", "Canaries per namespace (Flagger-compatible)",
                                  labels=["namespace"])
        per_ns: dict[str, int] = {}
        for ns, _ in _snapshot(self.m._targets):
            per_ns[ns] = per_ns.get(ns, 0) + 1
        for ns, n in sorted(per_ns.items()):
            total.add_metric([ns], float(n))
        yield total
        # flagger_info: canary_operator_info under Flagger's name, for drop-in dashboards
        alias = GaugeMetricFamily("flagger_info", "Operator build and settings (Flagger-compatible alias)",
                                  labels=["version", "mesh_provider"])
        for family in self.m.info.collect():
            for sample in family.samples:
                alias.add_metric([sample.labels["version"], sample.labels["mesh_provider"]], sample.value)
        yield alias


def _snapshot(d: Mapping) -> dict:
    """A copy of a dict another thread may be changing."""
    for _ in range(5):
        try:
            return dict(d)
        except RuntimeError:  # changed size during iteration
            continue
    return {}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        disable_created_metrics()  # process-wide: no *_created series anywhere
        self.registry = registry or CollectorRegistry()
        self._server: Any = None
        r = self.registry
        # ---- process and Python runtime (process_resident_memory_bytes, open fds, GC) ----
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # ---- Canaries -------------------------------------------------------------------
        self.info = Gauge("canary_operator_info", "Operator build and settings", ["version", "mesh_provider"], registry=r)
        self.phase = Gauge("canary_phase", "1 for the Canary's current phase, 0 for the others",
                           ["namespace", "name", "phase"], registry=r)
        self.phase_code = Gauge("canary_phase_code", "The Canary's phase as a number (docs/metrics.md), for timelines",
                                ["namespace", "name"], registry=r)
        self.weight = Gauge("canary_weight", "Traffic weight routed to the canary (percent)",
                            ["namespace", "name"], registry=r)
        self.failed_checks = Gauge("canary_failed_checks", "Failed checks of the current analysis",
                                   ["namespace", "name"], registry=r)
        self.promotions = Counter("canary_promotions_total", "Releases promoted", ["namespace", "name"], registry=r)
        self.rollbacks = Counter("canary_rollbacks_total", "Releases rolled back (or failed)", ["namespace", "name"],
                                 registry=r)
        self.analysis_seconds = Histogram(
            "canary_analysis_duration_seconds",
            "Time from the start of Progressing to promotion (Succeeded) or rollback (Failed)",
            ["namespace", "name"], registry=r,
            buckets=(10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400))
        self.check_value = Gauge("canary_check_value", "Last value of each metric check",
                                 ["namespace", "name", "check"], registry=r)
        self.advisory_disagreements = Counter(
            "canary_advisory_disagreements_total",
            "Releases whose real outcome differed from an advisory verdict (check: a dryRun metric, "
            "or (advisory) for an advisory Canary)", ["namespace", "name", "check"], registry=r)
        self.advisory_agreements = Counter(
            "canary_advisory_agreements_total",
            "Releases whose real outcome was the one an advisory verdict said", ["namespace", "name", "check"],
            registry=r)
        self.check_threshold = Gauge("canary_check_threshold", "Threshold of each metric check (thresholdRange)",
                                     ["namespace", "name", "check", "bound"], registry=r)
        # ---- operator health ------------------------------------------------------------
        self.tick_seconds = Histogram("canary_operator_reconcile_duration_seconds", "Duration of one Canary tick",
                                      registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.canaries = Gauge("canary_operator_canaries", "Canaries handled by this operator", registry=r)
        self.queue_depth = Gauge("canary_operator_scheduler_queue_depth",
                                 "Canaries whose tick is due but waiting for a free slot (--max-concurrent)",
                                 registry=r)
        self.metric_query_seconds = Histogram(
            "canary_operator_metric_query_duration_seconds",
            "Time to run the metric checks of one analysis step (all its queries)",
            registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.metric_query_errors = Counter(
            "canary_operator_metric_query_errors_total",
            "Metric checks whose query failed or returned no data",
            ["namespace", "name", "check"], registry=r)
        self._timings(r)
        self.alerts = Counter("canary_operator_alerts_total", "Alerts sent to alert providers, by provider type and result",
                              ["type", "result"], registry=r)
        # ---- Flagger-compatible series (for existing dashboards and alert rules) ------------
        self.flagger_status = Gauge("flagger_canary_status", "0 Progressing, 2 Failed, 1 any other phase",
                                    ["name", "namespace"], registry=r)
        self.flagger_weight = Gauge("flagger_canary_weight", "Traffic weight of the canary and the primary",
                                    ["workload", "namespace"], registry=r)
        self.flagger_metric = Gauge("flagger_canary_metric_analysis", "Last value of each metric check",
                                    ["name", "namespace", "metric"], registry=r)
        self.flagger_successes = Counter("flagger_canary_successes", "Releases promoted",
                                         ["name", "namespace", "deployment_strategy", "analysis_status"], registry=r)
        self.flagger_failures = Counter("flagger_canary_failures", "Releases rolled back",
                                        ["name", "namespace", "deployment_strategy", "analysis_status"], registry=r)

        self._last_phase: dict[Key, str] = {}
        self._targets: dict[Key, str] = {}  # canary -> targetRef.name (Flagger's `name` label)
        self._checks: dict[Key, set[str]] = {}
        self._advisory_checks: dict[Key, set[str]] = {}
        self._run_start: dict[Key, datetime] = {}
        self._kube: Any = None
        r.register(_Bound(self))

    # ---- where a tick's time goes (issue 12) ---------------------------------------------

    def _timings(self, r: CollectorRegistry) -> None:
        self.tick_phase_seconds = Histogram(
            "canary_operator_tick_phase_duration_seconds",
            "Time spent in each phase of a tick: queue (waiting for a slot), observe, webhooks, "
            "metrics (queries), status (the status write), effects (routes, scale, promote), notify",
            ["phase"], registry=r, buckets=TIMING_BUCKETS)
        self.api_request_seconds = Histogram(
            "canary_operator_api_request_duration_seconds",
            "Kubernetes API request latency as the operator sees it, by verb and resource",
            ["verb", "resource"], registry=r, buckets=TIMING_BUCKETS)
        for phase in TICK_PHASES:
            self.tick_phase_seconds.labels(phase)

    @contextlib.contextmanager
    def time_phase(self, name: str) -> Iterator[None]:
        """Time one phase of a tick (canary_operator_tick_phase_duration_seconds{phase})."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.tick_phase_seconds.labels(name).observe(time.perf_counter() - started)

    def observe_phase(self, name: str, seconds: float) -> None:
        self.tick_phase_seconds.labels(name).observe(max(seconds, 0.0))

    def observe_api(self, verb: str, path: str, seconds: float) -> None:
        """Kube.on_request: one API request's latency; the resource is read from the path."""
        self.api_request_seconds.labels(verb, api_resource(path)).observe(max(seconds, 0.0))

    # ---- sources read at scrape time ----------------------------------------------------

    def bind_kube(self, kube: Any) -> None:
        """Expose `kube.requests` (verb -> count) as canary_operator_api_requests_total{verb}."""
        self._kube = kube

    def _kube_requests(self) -> Mapping[str, int]:
        kube = self._kube
        return getattr(kube, "requests", None) or {}

    def bind_scheduler(self, scheduler: Any) -> None:
        """canary_operator_scheduler_queue_depth reads `scheduler.waiting` at scrape time."""
        self.queue_depth.set_function(lambda: float(getattr(scheduler, "waiting", 0) or 0))

    # ---- Canaries ---------------------------------------------------------------------

    def observe(self, canary: Canary, status: CanaryStatus) -> None:
        """on_decision: `canary.status` is the status before the tick, `status` after it."""
        key = (canary.namespace, canary.name)
        old = canary.status or CanaryStatus()
        phase = status.phase.value
        target = canary.spec.target_ref.name
        if key not in self._targets:
            # counters start at 0, so that increase() sees the first promotion or rollback
            self.promotions.labels(*key)
            self.rollbacks.labels(*key)
        self._targets[key] = target
        if self._last_phase.get(key) != phase:
            for p in PHASES:
                self.phase.labels(*key, p).set(1 if p == phase else 0)
            self._last_phase[key] = phase
        self.phase_code.labels(*key).set(PHASE_CODE.get(phase, 0))
        self.weight.labels(*key).set(status.canary_weight)
        self.failed_checks.labels(*key).set(status.failed_checks)
        self.flagger_status.labels(target, canary.namespace).set(flagger_status(status.phase))
        self.flagger_weight.labels(target, canary.namespace).set(status.canary_weight)
        self.flagger_weight.labels(f"{target}-primary", canary.namespace).set(100 - status.canary_weight)
        self._transition(canary, key, old, status)
        self._tallies(key, old, status)

    def _tallies(self, key: Key, old: CanaryStatus, new: CanaryStatus) -> None:
        """status.advisory.tallies only grow: count what this decision added (once, also across
        restarts: the pair of statuses says it)."""
        if new.advisory is None or not new.advisory.tallies:
            return
        before = {t.check: t for t in (old.advisory.tallies or [])} if old.advisory is not None else {}
        seen = self._advisory_checks.setdefault(key, set())
        for tally in new.advisory.tallies:
            prior = before.get(tally.check)
            if tally.check not in seen:
                seen.add(tally.check)
                self.advisory_disagreements.labels(*key, tally.check)
                self.advisory_agreements.labels(*key, tally.check)
            for counter, now, then in (
                    (self.advisory_disagreements, tally.disagreed, prior.disagreed if prior else 0),
                    (self.advisory_agreements, tally.agreed, prior.agreed if prior else 0)):
                added = (now or 0) - (then or 0)
                if added > 0:
                    counter.labels(*key, tally.check).inc(added)

    def _transition(self, canary: Canary, key: Key, old: CanaryStatus, new: CanaryStatus) -> None:
        if new.phase == Phase.PROGRESSING and old.phase != Phase.PROGRESSING:
            if new.last_transition_time is not None:
                self._run_start[key] = new.last_transition_time
        elif key not in self._run_start and old.phase == Phase.PROGRESSING and old.last_transition_time:
            self._run_start[key] = old.last_transition_time  # we restarted during a run
        if new.phase == old.phase:
            return
        analysis = canary.spec.analysis
        strategy = FLAGGER_STRATEGY.get(analysis.strategy if analysis else "canary", "canary")
        skipped = "skipped" if canary.spec.analysis_skipped else "completed"
        target = canary.spec.target_ref.name
        ended = False
        if (new.phase == Phase.SUCCEEDED and old.phase in RUN_PHASES
                and new.last_promoted_spec != old.last_promoted_spec):  # not a cancelled run
            self.promotions.labels(*key).inc()
            self.flagger_successes.labels(target, canary.namespace, strategy, skipped).inc()
            ended = True
        elif new.phase == Phase.FAILED:
            self.rollbacks.labels(*key).inc()
            self.flagger_failures.labels(target, canary.namespace, strategy, skipped).inc()
            ended = old.phase in RUN_PHASES
        start = self._run_start.get(key)
        if ended:
            seconds = _seconds(start, new.last_transition_time)
            if seconds is not None:
                self.analysis_seconds.labels(*key).observe(seconds)
        if new.phase not in RUN_PHASES:
            self._run_start.pop(key, None)

    def observe_checks(self, canary: Canary, metric_results: Iterable[MetricResult]) -> None:
        """Last value and thresholds of each metric check (call after the checks ran).

        A check without a value (query failed, no data) loses its value series until it has one
        again, so a graph shows a gap rather than a stale number.
        """
        key = (canary.namespace, canary.name)
        target = canary.spec.target_ref.name
        seen = self._checks.setdefault(key, set())
        for r in metric_results:
            seen.add(r.name)
            if r.value is None:
                self.check_value.remove(*key, r.name)
                self.flagger_metric.remove(target, canary.namespace, r.name)
            else:
                self.check_value.labels(*key, r.name).set(r.value)
                self.flagger_metric.labels(target, canary.namespace, r.name).set(r.value)
            for bound, value in (("min", r.min), ("max", r.max)):
                if value is None:
                    self.check_threshold.remove(*key, r.name, bound)
                else:
                    self.check_threshold.labels(*key, r.name, bound).set(value)

    async def observe_metric_run(self, canary: Canary,
                                 run: Awaitable[tuple[MetricResult, ...]]) -> tuple[MetricResult, ...]:
        """Await a run of the metric checks: time it, count failed queries, record the values.

        Returns the run's results unchanged (and re-raises what the run raises, after counting it).
        """
        key = (canary.namespace, canary.name)
        started = time.perf_counter()
        try:
            results = await run
        except BaseException:
            self.metric_query_errors.labels(*key, ALL_CHECKS).inc()
            raise
        finally:
            self.metric_query_seconds.observe(time.perf_counter() - started)
        for r in results or ():
            if r.value is None:
                self.metric_query_errors.labels(*key, r.name).inc()
        self.observe_checks(canary, results or ())
        return results

    def observe_alert(self, delivery: Any) -> None:
        """Notifier.on_delivery: count alerts by provider type and result."""
        self.alerts.labels(getattr(delivery, "type", "unknown"), "sent" if delivery.ok else "failed").inc()

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._last_phase.pop(key, None)
        self._run_start.pop(key, None)
        for p in PHASES:
            self.phase.remove(namespace, name, p)
        for g in (self.weight, self.failed_checks, self.phase_code):
            g.remove(namespace, name)
        for check in self._advisory_checks.pop(key, set()):
            self.advisory_disagreements.remove(namespace, name, check)
            self.advisory_agreements.remove(namespace, name, check)
        checks = self._checks.pop(key, set())
        for check in checks:
            self.check_value.remove(namespace, name, check)
            for bound in ("min", "max"):
                self.check_threshold.remove(namespace, name, check, bound)
        target = self._targets.pop(key, None)
        if target is not None and target not in {t for k, t in self._targets.items() if k[0] == namespace}:
            self.flagger_status.remove(target, namespace)
            self.flagger_weight.remove(target, namespace)
            self.flagger_weight.remove(f"{target}-primary", namespace)
            for check in checks:
                self.flagger_metric.remove(target, namespace, check)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        """Stop serving and free the port (blocks up to half a second), for the next operator."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
