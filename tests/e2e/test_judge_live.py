"""The judge end to end: the operator process, the testbed's real Prometheus and the traffic
simulator. The canary is compared with the primary serving the same traffic at the same time.

The latency template is the mean request duration over 3 s windows (the simulator's latency
distribution is shifted as a whole by `sim.canary.dev/latency-ms`, so a 30 % higher mean is a
30 % higher p99 too; the builtin request-duration reads p99 from Istio's coarse histogram
buckets, where 100 and 130 ms fall into the same 100-250 ms bucket).
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"

LATENCY_MEAN = (
    'sum(rate(istio_request_duration_milliseconds_sum{reporter="destination",'
    'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[3s])) / '
    'sum(rate(istio_request_duration_milliseconds_count{reporter="destination",'
    'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[3s]))'
)


def latency_template(api_client, ns: str) -> None:
    ops.apply(api_client, {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
                           "metadata": {"name": "latency-mean"},
                           "spec": {"provider": {"type": "prometheus", "address": ops.cluster.PROM_URL},
                                    "query": LATENCY_MEAN}}, ns)


def compared(**extra) -> dict:
    return {"name": "latency-mean", "templateRef": {"name": "latency-mean"}, "interval": "20s",
            "compare": {"tolerance": 10, "minSamples": 8}, **extra}


def phase(api_client, ns: str) -> str | None:
    return ops.canary_status(api_client, ns, "podinfo").get("phase")


def wait_phase(api_client, ns: str, want: set[str], timeout: float, operator) -> str:
    try:
        return ops.wait_until(lambda: phase(api_client, ns) in want and phase(api_client, ns), timeout,
                              f"phase in {want}")
    except TimeoutError:
        print(operator.log_tail(80))
        raise


def checks(api_client, ns: str, name: str) -> list[dict]:
    ledger = ops.canary_status(api_client, ns, "podinfo").get("ledger") or []
    return [c for e in ledger for c in e.get("checks") or [] if c["name"] == name]


def wait_for_primary_latency(ns: str) -> None:
    """The primary's latency is in Prometheus: on a testbed just started (the first test of a
    run) the first scrapes of its traffic come seconds after Initialized, and a check judged
    before them sees no samples at all (NoData, which fails by default)."""
    q = LATENCY_MEAN.replace("{{ namespace }}", ns).replace("{{ target }}", "podinfo-primary")
    ops.wait_until(lambda: ops.prom_value(q) is not None, 60, "the primary's latency in Prometheus")


def setup(api_client, ns: str, operator, metrics: list[dict], **kw) -> None:
    latency_template(api_client, ns)
    ops.apply(api_client, deployment("podinfo", annotations={"sim.canary.dev/latency-ms": "100"}), ns)
    ops.apply(api_client, canary("podinfo", metrics=metrics, **kw), ns)
    wait_phase(api_client, ns, {"Initialized"}, 60, operator)
    wait_for_primary_latency(ns)


def test_judge_rolls_back_a_slower_canary_that_a_fixed_bound_lets_through(api_client, namespace, operator):
    fixed = {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s", "noData": "hold"}
    setup(api_client, namespace, operator, [fixed, compared()], threshold=1, step_weight=20, max_weight=60)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/latency-ms": "130"})
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 120, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed", st.get("lastFailure")
    assert st["lastFailure"]["check"] == "latency-mean"
    # the check that rolled back: the fixed 500 ms bound passed, the judge failed the canary
    rollback = next(e for e in reversed(st["ledger"]) if e["action"] == "rollback")
    by_name = {c["name"]: c for c in rollback["checks"]}
    fixed_check = by_name["request-duration"]
    # the fixed bound never rejected it (at the deciding step it passed, or had no data yet)
    assert fixed_check.get("value") is None or (fixed_check["ok"] and fixed_check["value"] < 500), fixed_check
    assert all(c.get("value") is None or c["value"] < 500 for e in st["ledger"] for c in e.get("checks") or []
               if c["name"] == "request-duration")
    judged = by_name["latency-mean"]
    assert judged["verdict"] == "Fail" and judged["test"] == "rank" and judged["pValue"] < 0.05
    assert judged["shiftLow"] > 10 and judged["canarySamples"] >= 8 and judged["primarySamples"] >= 8
    primary = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image != IMAGE2


def test_a_failing_dry_run_metric_never_stops_a_good_release(api_client, namespace, operator):
    real = {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s", "noData": "hold"}
    # ten steps: the dry run gathers its samples while the release goes on (it never holds it)
    setup(api_client, namespace, operator, [real, compared(dryRun=True)], threshold=1, step_weight=5,
          max_weight=50)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/latency-ms": "130"})
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 120, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Succeeded", st.get("lastFailure")
    shadow = checks(api_client, namespace, "latency-mean")
    assert shadow and all(c.get("dryRun") for c in shadow)
    assert any(c.get("verdict") == "Fail" for c in shadow), shadow
    events = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "AdvisoryCheckFailed" for e in events)
    # the dry run said "fail" and the release was promoted: one disagreement
    tally = {t["check"]: t for t in st["advisory"]["tallies"]}["latency-mean"]
    assert (tally["agreed"], tally["disagreed"]) == (0, 1) and "promoted by the analysis" in tally["last"], tally


def test_no_data_hold_waits_for_traffic_then_finishes(api_client, namespace, operator):
    setup(api_client, namespace, operator, [compared(noData="hold", compare={"minSamples": 5})],
          threshold=1, step_weight=50, max_weight=50, progressDeadlineSeconds=120)

    def rps(value: str) -> None:
        route_rps(api_client, namespace, value)

    rps("0")
    time.sleep(4)  # the last requests leave the 3 s windows
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight") == 50, 60,
                   "first step")
    ops.wait_until(lambda: any(e["action"] == "hold" for e in
                               ops.canary_status(api_client, namespace, "podinfo").get("ledger") or []),
                   30, "a hold")
    time.sleep(6)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Progressing" and st["canaryWeight"] == 50 and st.get("failedChecks", 0) == 0
    held = checks(api_client, namespace, "latency-mean")
    assert held and held[-1]["verdict"] in ("NoData", "Inconclusive")
    rps("50")
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 90, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Succeeded" and st.get("failedChecks", 0) == 0
    assert checks(api_client, namespace, "latency-mean")[-1]["verdict"] == "Pass"


ERROR_RATE = (
    '100 * (sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}",response_code=~"5.*"}[3s])) or vector(0)) / '
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[3s]))'
)


def route_rps(api_client, ns: str, value: str) -> None:
    """The simulator's request rate for the Canary's VirtualService (the operator keeps
    annotations it does not own); the VirtualService may come a moment after Initialized."""
    custom = kubernetes.client.CustomObjectsApi(api_client)

    def patched() -> bool:
        try:
            custom.patch_namespaced_custom_object("networking.istio.io", "v1beta1", ns, "virtualservices",
                                                  "podinfo", {"metadata": {"annotations": {"sim.canary.dev/rps": value}}})
            return True
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
            return False

    ops.wait_until(patched, 20, "the VirtualService")


def test_a_more_variable_canary_fails_the_dispersion_test(api_client, namespace, operator):
    metric = compared(interval="40s", compare={"tolerance": 10, "minSamples": 35})
    setup(api_client, namespace, operator, [metric], threshold=1, step_weight=50, max_weight=50,
          progressDeadlineSeconds=120)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/latency-jitter": "1.0"})  # same mean, 5x the spread
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 120, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed", st.get("lastFailure")
    judged = [c for c in checks(api_client, namespace, "latency-mean") if c.get("verdict") == "Fail"][-1]
    assert judged["test"] == "dispersion" and judged["shift"] > 1.5, judged


def test_errors_where_the_primary_has_none_fail_the_rate_test_and_1_rps_is_inconclusive(
        api_client, namespace, operator):
    ops.apply(api_client, {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
                           "metadata": {"name": "error-rate"},
                           "spec": {"provider": {"type": "prometheus", "address": ops.cluster.PROM_URL},
                                    "query": ERROR_RATE}}, namespace)
    # 40 samples a side: the canary's errors (1/s) fall into overlapping 3 s windows, a series
    # so correlated that 20 samples are worth about 5 independent ones, and a check of 20 missed
    # this canary about 1 time in 20 (tests/unit/test_judge.py); 40 miss it well under 1 in 100
    metric = {"name": "error-rate", "templateRef": {"name": "error-rate"}, "interval": "40s",
              "compare": {"minSamples": 40}, "noData": "hold"}
    setup(api_client, namespace, operator, [metric], threshold=1, step_weight=50, max_weight=50,
          progressDeadlineSeconds=120)
    # enough traffic (400 rps): 0.5 % errors where the primary has none fail the rate test
    route_rps(api_client, namespace, "400")
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/error-rate": "0.005"})
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 150, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed", st.get("lastFailure")
    judged = [c for c in checks(api_client, namespace, "error-rate") if c.get("verdict") == "Fail"][-1]
    assert judged["test"] == "rate" and judged["pValue"] < 0.05, judged
    # the same canary at 1 rps: most 3 s windows hold no request or one; too few samples to
    # judge, so it holds with its sample counts, never a pass
    route_rps(api_client, namespace, "1")
    time.sleep(4)
    before = len(checks(api_client, namespace, "error-rate"))
    ops.patch_deployment(api_client, namespace, "podinfo", image="ghcr.io/stefanprodan/podinfo:6.0.2",
                         annotations={"sim.canary.dev/error-rate": "0.005"})
    ops.wait_until(lambda: any(c.get("verdict") == "Inconclusive"
                               for c in checks(api_client, namespace, "error-rate")[before:]),
                   100, "an Inconclusive check")
    time.sleep(6)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Progressing" and st.get("failedChecks", 0) == 0
    seen = checks(api_client, namespace, "error-rate")[before:]
    assert all(c.get("verdict") in ("Inconclusive", "NoData") for c in seen), seen
    assert any(0 < c.get("canarySamples", 0) < 40 for c in seen), seen


def _prometheus_pid() -> int:
    pid = ops.cluster._pid(ops.cluster.paths(), "prometheus")
    assert pid, "the testbed's Prometheus is not running"
    return pid


def test_prometheus_outage_with_on_error_hold_holds_then_promotes(api_client, namespace, operator):
    import os
    import signal

    # noData: hold as well: the first query after Prometheus comes back finds no sample in the
    # interval yet (the gap of the outage)
    setup(api_client, namespace, operator, [compared(onError="hold", noData="hold")], threshold=1, step_weight=25,
          max_weight=50, progressDeadlineSeconds=120)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight") == 25, 60,
                   "first step")
    pid = _prometheus_pid()
    os.kill(pid, signal.SIGSTOP)  # Prometheus frozen: queries get no answer
    try:
        time.sleep(30)
        st = ops.canary_status(api_client, namespace, "podinfo")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert st["phase"] == "Progressing" and st.get("failedChecks", 0) == 0, st.get("lastFailure")
    assert st["canaryWeight"] == 25
    assert any(e["action"] == "hold" and "onError: hold" in e.get("message", "") for e in st["ledger"])
    wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 90, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Succeeded", [(e["action"], e.get("message")) for e in st["ledger"][-6:]]


def test_prometheus_outage_with_the_default_rolls_back(api_client, namespace, operator):
    import os
    import signal

    setup(api_client, namespace, operator, [compared()], threshold=1, step_weight=25, max_weight=50)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight") == 25, 60,
                   "first step")
    pid = _prometheus_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_phase(api_client, namespace, {"Failed", "Succeeded"}, 40, operator)
    finally:
        os.kill(pid, signal.SIGCONT)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed" and "no answer" in st["lastFailure"]["message"], st["lastFailure"]
