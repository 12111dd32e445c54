"""The operator's own metrics: series, transitions read from (old, new) status pairs, checks,
bound sources (Kube requests, scheduler queue) and the Flagger-compatible series."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from canary.adapters.notifiers import Delivery
from canary.metrics import OperatorMetrics, flagger_status
from canary.models import Canary, CanaryStatus
from canary.reconciler import TickResult
from canary.scheduler import Scheduler
from canary.types import MetricResult

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def canary(status: dict | None = None, name: str = "podinfo", namespace: str = "shop", **analysis: Any) -> Canary:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-app"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 50, "stepWeight": 10, **analysis},
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


def st(phase: str, at: datetime = T0, weight: int = 0, failed: int = 0, promoted: str = "rev1",
       applied: str = "rev2") -> dict:
    return {"phase": phase, "lastTransitionTime": at.isoformat(), "canaryWeight": weight, "failedChecks": failed,
            "lastPromotedSpec": promoted, "lastAppliedSpec": applied}


class Run:
    """Feeds observe() the way the reconciler does: (Canary with the old status, new status)."""

    def __init__(self, m: OperatorMetrics, **canary_kw: Any):
        self.m = m
        self.kw = canary_kw
        self.current: dict | None = None

    def to(self, status: dict) -> None:
        self.m.observe(canary(self.current, **self.kw), CanaryStatus.model_validate(status))
        self.current = status


def val(m: OperatorMetrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(metric, labels)


def test_phase_is_one_hot_and_weight_and_failed_checks() -> None:
    m = OperatorMetrics()
    run = Run(m)
    run.to(st("Progressing", weight=20, failed=1))
    assert val(m, "canary_phase", namespace="shop", name="podinfo", phase="Progressing") == 1
    assert val(m, "canary_phase", namespace="shop", name="podinfo", phase="Succeeded") == 0
    assert val(m, "canary_weight", namespace="shop", name="podinfo") == 20
    assert val(m, "canary_failed_checks", namespace="shop", name="podinfo") == 1
    run.to(st("WaitingPromotion", weight=50))
    assert val(m, "canary_phase", namespace="shop", name="podinfo", phase="Progressing") == 0
    assert val(m, "canary_phase", namespace="shop", name="podinfo", phase="WaitingPromotion") == 1
    assert val(m, "canary_phase_code", namespace="shop", name="podinfo") == 5
    phases = [s for s in m.registry.collect() if s.name == "canary_phase"][0].samples
    assert sum(s.value for s in phases) == 1 and len(phases) == 11  # every phase but "" has a series


def test_a_promotion_is_counted_once_with_its_duration() -> None:
    m = OperatorMetrics()
    run = Run(m)
    run.to(st("Initialized", promoted="rev1", applied="rev1"))
    run.to(st("Progressing", T0 + timedelta(seconds=10), weight=10))
    run.to(st("Progressing", T0 + timedelta(seconds=10), weight=20))
    run.to(st("Promoting", T0 + timedelta(seconds=200), weight=50))
    run.to(st("Finalising", T0 + timedelta(seconds=250)))
    run.to(st("Succeeded", T0 + timedelta(seconds=310), promoted="rev2"))
    run.to(st("Succeeded", T0 + timedelta(seconds=310), promoted="rev2"))  # a later, idle tick
    labels = dict(namespace="shop", name="podinfo")
    assert val(m, "canary_promotions_total", **labels) == 1
    assert val(m, "canary_rollbacks_total", **labels) == 0  # present from the start, for increase()
    assert val(m, "canary_analysis_duration_seconds_count", **labels) == 1
    assert val(m, "canary_analysis_duration_seconds_sum", **labels) == 300
    assert val(m, "flagger_canary_successes_total", name="podinfo-app", namespace="shop",
               deployment_strategy="canary", analysis_status="completed") == 1


def test_a_rollback_is_counted_with_its_duration() -> None:
    m = OperatorMetrics()
    run = Run(m, iterations=5)
    run.to(st("Succeeded", promoted="rev1", applied="rev1"))
    run.to(st("Progressing", T0 + timedelta(seconds=5), weight=0, failed=1))
    run.to(st("Failed", T0 + timedelta(seconds=45), failed=2))
    run.to(st("Failed", T0 + timedelta(seconds=45), failed=2))
    labels = dict(namespace="shop", name="podinfo")
    assert val(m, "canary_rollbacks_total", **labels) == 1
    assert val(m, "canary_promotions_total", **labels) == 0
    assert val(m, "canary_analysis_duration_seconds_sum", **labels) == 40
    assert val(m, "flagger_canary_failures_total", name="podinfo-app", namespace="shop",
               deployment_strategy="blue-green", analysis_status="completed") == 1


def test_a_cancelled_run_is_not_a_promotion() -> None:
    m = OperatorMetrics()
    run = Run(m)
    run.to(st("Progressing", weight=10, promoted="rev1", applied="rev2"))
    run.to(st("Succeeded", T0 + timedelta(seconds=20), promoted="rev1", applied="rev1"))  # reverted
    assert val(m, "canary_promotions_total", namespace="shop", name="podinfo") == 0
    assert val(m, "canary_analysis_duration_seconds_count", namespace="shop", name="podinfo") is None


def test_the_duration_survives_an_operator_restart() -> None:
    m = OperatorMetrics()  # a new process: it first sees a Canary already Progressing
    run = Run(m)
    run.current = st("Progressing", T0, weight=30)
    run.to(st("Progressing", T0, weight=40))
    run.to(st("Failed", T0 + timedelta(seconds=90)))
    assert val(m, "canary_analysis_duration_seconds_sum", namespace="shop", name="podinfo") == 90


def test_observe_checks_values_and_thresholds() -> None:
    m = OperatorMetrics()
    c = canary()
    m.observe_checks(c, [
        MetricResult("request-success-rate", "q1", 99.5, min=99, ok=True),
        MetricResult("request-duration", "q2", 120.0, max=500, ok=True),
        MetricResult("custom", "q3", 3.0, min=1, max=5, ok=True),
    ])
    labels = dict(namespace="shop", name="podinfo")
    assert val(m, "canary_check_value", check="request-success-rate", **labels) == 99.5
    assert val(m, "canary_check_threshold", check="request-success-rate", bound="min", **labels) == 99
    assert val(m, "canary_check_threshold", check="request-success-rate", bound="max", **labels) is None
    assert val(m, "canary_check_threshold", check="request-duration", bound="max", **labels) == 500
    assert val(m, "canary_check_threshold", check="custom", bound="min", **labels) == 1
    assert val(m, "flagger_canary_metric_analysis", name="podinfo-app", namespace="shop", metric="custom") == 3
    # no data: the value series goes away, the threshold stays
    m.observe_checks(c, [MetricResult("request-success-rate", "q1", None, min=99, message="no values")])
    assert val(m, "canary_check_value", check="request-success-rate", **labels) is None
    assert val(m, "canary_check_threshold", check="request-success-rate", bound="min", **labels) == 99


async def test_observe_metric_run_times_and_counts_errors() -> None:
    m = OperatorMetrics()
    c = canary()

    async def run() -> tuple[MetricResult, ...]:
        await asyncio.sleep(0.05)
        return (MetricResult("request-success-rate", "q", 97.0, min=99), MetricResult("request-duration", "q", None))

    results = await m.observe_metric_run(c, run())
    assert [r.name for r in results] == ["request-success-rate", "request-duration"]
    assert val(m, "canary_operator_metric_query_duration_seconds_count") == 1
    assert val(m, "canary_operator_metric_query_duration_seconds_sum") >= 0.05
    labels = dict(namespace="shop", name="podinfo")
    assert val(m, "canary_operator_metric_query_errors_total", check="request-duration", **labels) == 1
    assert val(m, "canary_operator_metric_query_errors_total", check="request-success-rate", **labels) is None
    assert val(m, "canary_check_value", check="request-success-rate", **labels) == 97

    async def broken() -> tuple[MetricResult, ...]:
        raise ConnectionError("prometheus down")

    with pytest.raises(ConnectionError):
        await m.observe_metric_run(c, broken())
    assert val(m, "canary_operator_metric_query_errors_total", check="(all)", **labels) == 1
    assert val(m, "canary_operator_metric_query_duration_seconds_count") == 2


def test_api_requests_are_read_at_scrape_time() -> None:
    class FakeKube:
        requests: dict[str, int] = {}

    m = OperatorMetrics()
    kube = FakeKube()
    kube.requests = {"get": 3}
    m.bind_kube(kube)
    assert val(m, "canary_operator_api_requests_total", verb="get") == 3
    kube.requests["patch"] = 2
    kube.requests["get"] = 10
    assert val(m, "canary_operator_api_requests_total", verb="get") == 10
    assert val(m, "canary_operator_api_requests_total", verb="patch") == 2


async def test_queue_depth_counts_ticks_waiting_for_a_slot() -> None:
    release = asyncio.Event()
    running = 0

    async def tick(obj) -> TickResult:
        nonlocal running
        running += 1
        await release.wait()
        return TickResult(wake_after=60)

    sched = Scheduler(tick, max_concurrent=1)
    m = OperatorMetrics()
    m.bind_scheduler(sched)
    for i in range(3):
        sched.upsert({"metadata": {"namespace": "shop", "name": f"c{i}", "resourceVersion": "1"}, "spec": {}})
    for _ in range(50):
        await asyncio.sleep(0.01)
        if val(m, "canary_operator_scheduler_queue_depth") == 2:
            break
    assert running == 1
    assert val(m, "canary_operator_scheduler_queue_depth") == 2
    release.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if running == 3:
            break
    assert val(m, "canary_operator_scheduler_queue_depth") == 0
    await sched.stop()


def test_flagger_compatible_series() -> None:
    assert [flagger_status(p) for p in ("Progressing", "Failed", "Succeeded", "Initialized", "WaitingPromotion")] \
        == [0, 2, 1, 1, 1]
    m = OperatorMetrics()
    Run(m).to(st("Progressing", weight=30))
    m.observe(canary(None, name="other"), CanaryStatus.model_validate(st("Failed")))
    m.observe(canary(None, name="third", namespace="web"), CanaryStatus.model_validate(st("Succeeded")))
    assert val(m, "flagger_canary_status", name="podinfo-app", namespace="shop") == 0
    assert val(m, "flagger_canary_status", name="other-app", namespace="shop") == 2
    assert val(m, "flagger_canary_status", name="third-app", namespace="web") == 1
    assert val(m, "flagger_canary_weight", workload="podinfo-app", namespace="shop") == 30
    assert val(m, "flagger_canary_weight", workload="podinfo-app-primary", namespace="shop") == 70
    assert val(m, "flagger_canary_total", namespace="shop") == 2
    assert val(m, "flagger_canary_total", namespace="web") == 1


def test_forget_removes_a_canarys_series() -> None:
    m = OperatorMetrics()
    Run(m).to(st("Progressing", weight=10))
    m.observe_checks(canary(), [MetricResult("request-success-rate", "q", 99.9, min=99)])
    m.forget("shop", "podinfo")
    names = {s.name: s for fam in m.registry.collect() for s in fam.samples}
    left = [s for fam in m.registry.collect() for s in fam.samples if s.labels.get("namespace") == "shop"
            and not s.name.endswith(("_total", "_created", "_bucket", "_count", "_sum"))]
    assert left == [], left
    assert "canary_check_value" not in names


def test_alert_deliveries_are_counted() -> None:
    m = OperatorMetrics()
    m.observe_alert(Delivery("shop/p", "slack", True, 200))
    m.observe_alert(Delivery("shop/p", "slack", False, 500))
    m.observe_alert(Delivery("shop/q", "slack", True, 200))
    assert val(m, "canary_operator_alerts_total", type="slack", result="sent") == 2
    assert val(m, "canary_operator_alerts_total", type="slack", result="failed") == 1


def test_served_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = OperatorMetrics()
    m.info.labels("0.1.0", "istio").set(1)
    Run(m).to(st("Progressing", weight=10))
    m.serve(port, addr="127.0.0.1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'canary_operator_info{mesh_provider="istio",version="0.1.0"} 1.0' in text
    assert 'canary_weight{name="podinfo",namespace="shop"} 10.0' in text
    assert "# TYPE canary_operator_api_requests_total counter" in text


# ---- the chart's dashboard and alerting rules use series that exist -----------------------------

CHART_FILES = __import__("pathlib").Path(__file__).resolve().parents[2] / "charts" / "canary-operator" / "files"


def _exposed_names() -> set[str]:
    m = OperatorMetrics()
    m.bind_kube(type("K", (), {"requests": {"get": 1}})())
    run = Run(m)
    run.to(st("Progressing", weight=10))
    run.to(st("Failed", T0 + timedelta(seconds=5)))
    run.to(st("Progressing", T0 + timedelta(seconds=10), weight=10))
    run.to(st("Succeeded", T0 + timedelta(seconds=20), promoted="rev2"))
    m.observe_checks(canary(), [MetricResult("c", "q", 1.0, min=0, max=2)])
    m.metric_query_errors.labels("shop", "podinfo", "c").inc()
    m.observe_alert(Delivery("p", "slack", True))
    m.info.labels("v", "istio").set(1)
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def _series_in(expr: str) -> set[str]:
    return {w for w in _metric_names(expr) if w.startswith(("canary_", "flagger_"))}


def _simulator_names() -> set[str]:
    """The series the testbed's traffic simulator exports (one request observed)."""
    from testbed.trafficsim import REQUEST_LABELS, ROUTE_LABELS, Metrics

    sim = Metrics()
    sim.observe(tuple("x" for _ in REQUEST_LABELS[:-2]) + ("200", "-"), [12.0], 0.0)
    sim.observe(("destination", "x", "ns", "podinfo", "ns", "s", "s", "ns", "http", "503", "-"), [5.0], 0.0)
    sim.count_route(tuple("x" for _ in ROUTE_LABELS), 1, 0.0)
    sim.count_route(tuple("x" for _ in ROUTE_LABELS), 1, 0.0, mirrored=True)
    return {s.name for fam in sim.collect() for s in fam.samples}


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression or a Grafana label_values() query."""
    import re

    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)", expr))
    names |= set(re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[,)]", expr))
    return names


def _dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    out = [(f"panel {p['title']}", t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]
    out += [(f"annotation {a['name']}", a["expr"]) for a in dash["annotations"]["list"] if "expr" in a]
    out += [(f"variable {v['name']}", v["query"]["query"]) for v in dash["templating"]["list"]
            if isinstance(v.get("query"), dict)]
    return out


def test_dashboard_queries_use_exposed_series() -> None:
    """Every query of the dashboard (panels, annotations, variables) reads a series that the
    operator or the testbed's simulators really export."""
    import json

    dash = json.loads((CHART_FILES / "dashboard.json").read_text())
    exposed = _exposed_names() | _simulator_names()
    used: set[str] = set()
    for where, expr in _dashboard_queries(dash):
        names = _metric_names(expr)
        assert names, f"{where}: no series in {expr!r}"
        assert names <= exposed, f"{where}: {sorted(names - exposed)} exported by nobody"
        used |= names
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    assert {"canary_phase_code", "canary_weight", "canary_failed_checks", "canary_check_value",
            "canary_check_threshold", "canary_promotions_total", "canary_rollbacks_total",
            "canary_operator_reconcile_duration_seconds_bucket", "canary_operator_api_requests_total",
            "process_resident_memory_bytes", "process_open_fds", "python_gc_collections_total",
            "istio_requests_total", "istio_request_duration_milliseconds_bucket"} <= used
    assert [v["name"] for v in dash["templating"]["list"]][0] == "datasource"


def test_dashboard_has_one_panel_per_check_release_annotations_and_golden_signals() -> None:
    import json

    dash = json.loads((CHART_FILES / "dashboard.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    (checks,) = [p for p in panels if any("canary_check_value" in t["expr"] for t in p["targets"])]
    assert checks["repeat"] == "check"  # one panel per check: never percent and ms on one axis
    assert all('check="$check"' in t["expr"] for t in checks["targets"])
    assert "check" in [v["name"] for v in dash["templating"]["list"]]
    for p in panels:  # one unit per panel
        assert not p["fieldConfig"].get("overrides") or all(
            o["properties"][0]["id"] != "unit" for o in p["fieldConfig"]["overrides"]), p["title"]
    names = {a["name"] for a in dash["annotations"]["list"]}
    assert {"Promotions", "Rollbacks", "Release starts"} <= names
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert any(r.startswith("Golden signals") for r in rows)
    golden = [p for p in panels if any("istio_" in t["expr"] for t in p["targets"])]
    assert [p["fieldConfig"]["defaults"]["unit"] for p in golden] == ["reqps", "percentunit", "ms"]
    assert all('destination_workload=~"$target|$target-primary"' in t["expr"] for p in golden for t in p["targets"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_process_runtime_series_and_no_created_series() -> None:
    m = OperatorMetrics()
    m.info.labels("0.1.0", "istio").set(1)
    Run(m).to(st("Progressing", weight=10))
    m.observe_alert(Delivery("p", "slack", True))
    names = _exposed_names() | {s.name for fam in m.registry.collect() for s in fam.samples}
    assert {"process_resident_memory_bytes", "process_open_fds", "python_gc_collections_total", "python_info"} <= names
    assert not [n for n in names if n.endswith("_created")]
    assert val(m, "flagger_info", version="0.1.0", mesh_provider="istio") == 1
    assert val(m, "process_resident_memory_bytes") > 1e6
    health = {n for n in names if n.startswith("canary_") and not n.startswith("canary_operator_")}
    # everything else is about Canaries and carries their labels
    per_canary = {"canary_phase", "canary_phase_code", "canary_weight", "canary_failed_checks", "canary_check_value",
                  "canary_check_threshold", "canary_promotions_total", "canary_rollbacks_total"}
    assert {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in health} <= \
        per_canary | {"canary_analysis_duration_seconds"}


def test_alert_rules_use_exposed_series_and_fire(tmp_path) -> None:
    import shutil
    import subprocess

    import yaml

    doc = yaml.safe_load((CHART_FILES / "prometheus-rules.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    rules = [r for g in doc["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"CanaryFailed", "CanaryStuck"}
    exposed = _exposed_names()
    for r in rules:
        assert _series_in(r["expr"]) <= exposed, r["alert"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc["spec"]))
    labels = 'namespace="shop",name="podinfo"'
    by_name = {r["alert"]: r for r in rules}

    def expected(alert: str, name: str) -> dict:
        notes = {k: v.replace("{{ $labels.namespace }}", "shop").replace("{{ $labels.name }}", name)
                 for k, v in by_name[alert]["annotations"].items()}
        return {"exp_labels": {"severity": "warning", "namespace": "shop", "name": name}, "exp_annotations": notes}

    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'canary_phase{{{labels},phase="Failed"}}', "values": "0 0 1 1 1 1"},
                {"series": f'canary_phase{{namespace="shop",name="stuck",phase="Progressing"}}', "values": "1x100"},
                {"series": 'canary_weight{namespace="shop",name="stuck"}', "values": "20x100"},
                {"series": 'canary_failed_checks{namespace="shop",name="stuck"}', "values": "0x100"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "CanaryFailed", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "CanaryFailed",
                 "exp_alerts": [expected("CanaryFailed", "podinfo")]},
                {"eval_time": "30m", "alertname": "CanaryStuck", "exp_alerts": []},
                {"eval_time": "90m", "alertname": "CanaryStuck",
                 "exp_alerts": [expected("CanaryStuck", "stuck")]},
            ],
        }],
    }))
    out = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_advisory_disagreements_are_counted_once_from_the_status_pair() -> None:
    m = OperatorMetrics()
    run = Run(m)
    run.to(st("WaitingPromotion"))
    assert val(m, "canary_advisory_disagreements_total", namespace="shop", name="podinfo", check="(advisory)") is None
    tallied = {**st("Promoting"), "advisory": {"verdict": "Rollback", "tallies": [
        {"check": "(advisory)", "agreed": 0, "disagreed": 1}, {"check": "shadow", "agreed": 1, "disagreed": 0}]}}
    run.to(tallied)
    run.to(tallied)  # the next tick (or a restart) sees the same tallies: nothing more
    labels = {"namespace": "shop", "name": "podinfo"}
    assert val(m, "canary_advisory_disagreements_total", **labels, check="(advisory)") == 1
    assert val(m, "canary_advisory_disagreements_total", **labels, check="shadow") == 0
    assert val(m, "canary_advisory_agreements_total", **labels, check="shadow") == 1
    restarted = OperatorMetrics()  # a new process ticks from the written status: nothing new
    again = Run(restarted)
    again.current = tallied
    again.to(tallied)
    assert val(restarted, "canary_advisory_disagreements_total", **labels, check="(advisory)") == 0
    m.forget("shop", "podinfo")
    assert val(m, "canary_advisory_disagreements_total", **labels, check="(advisory)") is None
