"""Whole releases through an operator started with `--mesh-provider gatewayapi:v1` (Flagger's
Gateway API e2e: test/gatewayapi/test-canary.sh). The Canaries leave spec.provider empty, so the
operator's default provider is what is tested.

Gateway API has no mesh metrics of its own: as in Flagger's e2e the analysis uses MetricTemplates
on Istio's istio_requests_total with reporter="source", which the traffic simulator exports for
every HTTPRoute.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment

pytestmark = pytest.mark.testbed

IMAGE1 = "ghcr.io/stefanprodan/podinfo:6.0.0"
IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"
V1 = "gateway.networking.k8s.io/v1"

ERROR_RATE = (
    '100 - sum(rate(istio_requests_total{reporter="source",destination_workload_namespace=~"{{ namespace }}",'
    'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / '
    'sum(rate(istio_requests_total{reporter="source",destination_workload_namespace=~"{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'
)
LATENCY = (
    'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source",'
    'destination_workload_namespace=~"{{ namespace }}",destination_workload=~"{{ target }}"}'
    '[{{ interval }}])) by (le)) / 1000'
)


@pytest.fixture(scope="module")
def gw_operator(testbed):
    op = ops.OperatorProcess(name="e2e-gatewayapi-19160", metrics_port=19160, mesh_provider="gatewayapi:v1").start()
    yield op
    op.stop()
    if op.proc and op.proc.returncode not in (0, -15, None):
        print(op.log_tail(80))


# ---- helpers shared with test_strategies.py ---------------------------------------------------


def gateway(name: str = "gateway") -> dict:
    return {"apiVersion": V1, "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": "testbed",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com",
                                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}}


def metric_templates(api_client, ns: str) -> None:
    for name, query in (("error-rate", ERROR_RATE), ("latency", LATENCY)):
        ops.apply(api_client, {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
                               "metadata": {"name": name},
                               "spec": {"provider": {"type": "prometheus", "address": ops.cluster.PROM_URL},
                                        "query": query}}, ns)


def gateway_metrics(ns: str) -> list[dict]:
    return [
        {"name": "error-rate", "templateRef": {"name": "error-rate", "namespace": ns},
         "thresholdRange": {"max": 1}, "interval": "10s"},
        {"name": "latency", "templateRef": {"name": "latency", "namespace": ns},
         "thresholdRange": {"max": 0.5}, "interval": "10s"},
    ]


def get_httproute(api_client, ns: str, name: str) -> dict | None:
    try:
        return kubernetes.client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", ns, "httproutes", name)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def httproute_weights(api_client, ns: str, name: str) -> tuple[int, int] | None:
    """(primary, canary) of the rule that has both backends."""
    route = get_httproute(api_client, ns, name)
    if route is None:
        return None
    for rule in route["spec"].get("rules") or []:
        w = {b["name"]: b.get("weight", 1) for b in rule.get("backendRefs") or []}
        if set(w) == {f"{name}-primary", f"{name}-canary"}:
            return w[f"{name}-primary"], w[f"{name}-canary"]
    return None


def wait_phase(api_client, ns, name, want, timeout, operator):
    try:
        return ops.wait_until(lambda: ops.canary_status(api_client, ns, name).get("phase") in want, timeout,
                              f"{ns}/{name} phase in {want}")
    except TimeoutError:
        print(operator.log_tail(80))
        raise


def watch_release(api_client, ns: str, name: str, operator, weights, timeout: float = 150,
                  until=("Succeeded", "Failed")) -> tuple[list, list]:
    """Poll until a final phase; returns the distinct (phase, canaryWeight) and route samples seen."""
    phases: list = []
    routes: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ops.canary_status(api_client, ns, name)
        sample = (st.get("phase"), st.get("canaryWeight", 0))
        if not phases or phases[-1] != sample:
            phases.append(sample)
        w = weights(api_client, ns, name)
        if w is not None and (not routes or routes[-1] != w):
            routes.append(w)
        if st.get("phase") in until:
            return phases, routes
        time.sleep(0.2)
    print(operator.log_tail(80))
    pytest.fail(f"{ns}/{name} did not finish; phases {phases}, routes {routes}")


def gateway_canary(ns: str, name: str = "podinfo", **kw) -> dict:
    body = canary(name, metrics=gateway_metrics(ns), **kw)
    body["spec"]["service"].update({"hosts": ["www.example.com"],
                                    "gatewayRefs": [{"name": "gateway", "namespace": ns, "sectionName": "http"}]})
    return body


def setup(api_client, ns, operator, name="podinfo", **kw) -> None:
    ops.apply(api_client, gateway(), ns)
    metric_templates(api_client, ns)
    ops.apply(api_client, deployment(name), ns)
    ops.apply(api_client, gateway_canary(ns, name, **kw), ns)
    wait_phase(api_client, ns, name, {"Initialized"}, 90, operator)


def primary_image(api_client, ns, name="podinfo") -> str:
    dep = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(f"{name}-primary", ns)
    return dep.spec.template.spec.containers[0].image


# ---- tests -----------------------------------------------------------------------------------------


def test_gatewayapi_initialization(api_client, namespace, gw_operator):
    setup(api_client, namespace, gw_operator)
    route = get_httproute(api_client, namespace, "podinfo")
    assert route is not None
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "namespace": namespace, "name": "gateway", "sectionName": "http"}]
    assert route["spec"]["hostnames"] == ["www.example.com"]
    assert route["spec"]["rules"] == [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100},
                        {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 0}],
    }]
    owner = route["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Canary", "podinfo")
    assert not ops.get_canary(api_client, namespace, "podinfo")["spec"].get("provider")  # the operator default
    # no VirtualService: this operator routes with the Gateway API
    custom = kubernetes.client.CustomObjectsApi(api_client)
    vss = custom.list_namespaced_custom_object("networking.istio.io", "v1beta1", namespace, "virtualservices")
    assert vss["items"] == []
    core = kubernetes.client.CoreV1Api(api_client)
    assert core.read_namespaced_service("podinfo", namespace).spec.selector == {"app": "podinfo-primary"}
    apps = kubernetes.client.AppsV1Api(api_client)
    ops.wait_until(lambda: apps.read_namespaced_deployment("podinfo", namespace).spec.replicas == 0, 30,
                   "target scaled to zero")
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["canaryWeight"] == 0
    assert {c["type"]: c["status"] for c in st["conditions"]}.get("Promoted") == "True"


def test_gatewayapi_promotion(api_client, namespace, gw_operator):
    setup(api_client, namespace, gw_operator, threshold=3, max_weight=30, step_weight=10)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    phases, routes = watch_release(api_client, namespace, "podinfo", gw_operator, httproute_weights)
    print("gatewayapi promotion:", phases, routes)
    assert phases[-1][0] == "Succeeded", phases
    # the HTTPRoute stepped 10, 20, 30 (never above maxWeight) and went back to the primary
    canary_weights = [c for _, c in routes]
    assert [w for w in canary_weights if w] == [10, 20, 30], routes
    assert all(p + c == 100 for p, c in routes)
    assert routes[-1] == (100, 0)
    seen = [p for p, _ in phases]
    # Promoting lasts only until the primary is ready (milliseconds here): it may not be seen
    assert seen.index("Progressing") < seen.index("Succeeded"), phases
    assert set(seen) <= {"Initialized", "Progressing", "Promoting", "Finalising", "Succeeded"}, phases
    assert {w for p, w in phases if p == "Progressing"} >= {10, 20, 30}
    assert primary_image(api_client, namespace) == IMAGE2
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)
    apps = kubernetes.client.AppsV1Api(api_client)
    ops.wait_until(lambda: apps.read_namespaced_deployment("podinfo", namespace).spec.replicas == 0, 30,
                   "target scaled back to zero")
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["canaryWeight"] == 0


def test_gatewayapi_rollback(api_client, namespace, gw_operator):
    setup(api_client, namespace, gw_operator, threshold=2, max_weight=50, step_weight=20)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/error-rate": "0.5"})
    phases, routes = watch_release(api_client, namespace, "podinfo", gw_operator, httproute_weights)
    st = ops.canary_status(api_client, namespace, "podinfo")
    print("gatewayapi rollback:", phases, routes, st.get("lastFailure"))
    assert st["phase"] == "Failed", phases
    assert max(c for _, c in routes) >= 20, routes  # traffic reached the canary before the rollback
    assert max(c for _, c in routes) < 50, routes  # and never got to the end
    # the decision is written before its effects (write-ahead intent): the route follows within
    # a tick, so Failed may be read a moment before the HTTPRoute is back on the primary
    ops.wait_until(lambda: httproute_weights(api_client, namespace, "podinfo") == (100, 0), 10,
                   "the route back on the primary")
    assert st["failedChecks"] >= 2 and st["canaryWeight"] == 0
    failure = st["lastFailure"]
    assert failure["check"] == "error-rate"
    assert failure["value"] is not None and failure["value"] > 1
    assert primary_image(api_client, namespace) == IMAGE1
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Promoted"]["status"] == "False" and "error-rate" in cond["Promoted"]["message"]


def test_gatewayapi_builtin_metrics(api_client, namespace, gw_operator):
    """Flagger's builtin checks for the Gateway API (the app-level PromQL on
    http_request_duration_seconds) promote a good release and roll back a bad one."""
    builtin = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s"},
    ]
    ops.apply(api_client, gateway(), namespace)
    ops.apply(api_client, deployment("podinfo"), namespace)
    body = canary("podinfo", metrics=builtin, threshold=2, max_weight=30, step_weight=10)
    body["spec"]["service"].update({"hosts": ["www.example.com"],
                                    "gatewayRefs": [{"name": "gateway", "namespace": namespace}]})
    ops.apply(api_client, body, namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 90, gw_operator)

    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    phases, routes = watch_release(api_client, namespace, "podinfo", gw_operator, httproute_weights)
    assert phases[-1][0] == "Succeeded", phases
    assert [c for _, c in routes if c] == [10, 20, 30], routes
    ledger = ops.canary_status(api_client, namespace, "podinfo").get("ledger") or []
    checked = [c for e in ledger for c in e.get("checks") or [] if c["name"] == "request-success-rate"]
    # the very first check may find no data yet (the canary's first seconds of traffic have not
    # been scraped twice); the release still passes, and the later checks measured the canary
    assert checked and checked[-1]["ok"] and checked[-1]["value"] >= 99, checked
    assert "http_request_duration_seconds_count" in checked[0]["query"]  # Flagger's app-level PromQL

    ops.patch_deployment(api_client, namespace, "podinfo", image="ghcr.io/stefanprodan/podinfo:6.0.2",
                         annotations={"sim.canary.dev/error-rate": "0.5"})
    wait_phase(api_client, namespace, "podinfo", {"Progressing"}, 30, gw_operator)
    phases, routes = watch_release(api_client, namespace, "podinfo", gw_operator, httproute_weights)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed", phases
    assert st["lastFailure"]["check"] == "request-success-rate" and st["lastFailure"]["value"] < 99
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)
