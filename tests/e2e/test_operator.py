"""Whole releases through the operator process on the testbed (issue: the operator).

Every test uses its own namespace; the operator watches all of them.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment, routed

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"


def _apps(api_client):
    return kubernetes.client.AppsV1Api(api_client)


def _custom(api_client):
    return kubernetes.client.CustomObjectsApi(api_client)


def vs_weights(api_client, ns: str, name: str) -> tuple[int, int] | None:
    for version in ("v1beta1", "v1", "v1alpha3"):
        try:
            vs = _custom(api_client).get_namespaced_custom_object("networking.istio.io", version, ns, "virtualservices", name)
            break
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
    else:
        return None
    route = vs["spec"]["http"][-1]["route"]
    w = {r["destination"]["host"]: r.get("weight", 0) for r in route}
    return w.get(f"{name}-primary", 0), w.get(f"{name}-canary", 0)


def phase(api_client, ns, name):
    return ops.canary_status(api_client, ns, name).get("phase")


def wait_phase(api_client, ns, name, want, timeout=90, operator=None):
    try:
        return ops.wait_until(lambda: phase(api_client, ns, name) in want, timeout, f"{ns}/{name} phase in {want}")
    except TimeoutError:
        if operator is not None:
            print(operator.log_tail(60))
        raise


def setup_canary(api_client, ns, name="podinfo", operator=None, dep_kw=None, **canary_kw):
    ops.apply(api_client, deployment(name, **(dep_kw or {})), ns)
    ops.apply(api_client, canary(name, **canary_kw), ns)
    wait_phase(api_client, ns, name, {"Initialized"}, 60, operator)


def test_initialization(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator)
    apps = _apps(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    primary = apps.read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.selector.match_labels == {"app": "podinfo-primary"}
    assert (primary.status.available_replicas or 0) >= 1
    svcs = {s.metadata.name: s for s in core.list_namespaced_service(namespace).items}
    assert {"podinfo", "podinfo-primary", "podinfo-canary"} <= set(svcs)
    assert svcs["podinfo"].spec.selector == {"app": "podinfo-primary"}
    assert svcs["podinfo-primary"].spec.selector == {"app": "podinfo-primary"}
    assert svcs["podinfo-canary"].spec.selector == {"app": "podinfo"}
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    ops.wait_until(lambda: apps.read_namespaced_deployment("podinfo", namespace).spec.replicas == 0, 20,
                   "target scaled to zero")
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["canaryWeight"] == 0
    cond = {c["type"]: c for c in st.get("conditions", [])}
    assert cond["Promoted"]["status"] == "True"


def test_promotion(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=30, step_weight=10)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    seen_status, seen_routes = set(), set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = ops.canary_status(api_client, namespace, "podinfo")
        seen_status.add(st.get("canaryWeight", 0))
        w = vs_weights(api_client, namespace, "podinfo")
        if w:
            seen_routes.add(w[1])
        if st.get("phase") == "Succeeded":
            break
        time.sleep(0.2)
    else:
        print(operator.log_tail(80))
        pytest.fail(f"not promoted; seen weights {sorted(seen_status)}")
    assert {10, 20, 30} <= seen_status, seen_status
    assert {10, 20, 30} <= seen_routes, seen_routes
    assert max(seen_status) == 30 and max(seen_routes) == 30  # never above maxWeight
    apps = _apps(api_client)
    primary = apps.read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    assert primary.spec.selector.match_labels == {"app": "podinfo-primary"}
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    ops.wait_until(lambda: apps.read_namespaced_deployment("podinfo", namespace).spec.replicas == 0, 20,
                   "target scaled back to zero")
    cond = {c["type"]: c for c in ops.canary_status(api_client, namespace, "podinfo")["conditions"]}
    assert cond["Promoted"]["status"] == "True"


def test_rollback_on_metrics(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, threshold=2, max_weight=50, step_weight=25)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/error-rate": "0.5"})
    wait_phase(api_client, namespace, "podinfo", {"Failed", "Succeeded"}, 120, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed"
    assert st["failedChecks"] >= 2
    assert st["canaryWeight"] == 0
    failure = st["lastFailure"]
    assert failure["check"] == "request-success-rate"
    assert failure["value"] is not None and failure["value"] < 99
    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == "ghcr.io/stefanprodan/podinfo:6.0.0"
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Promoted"]["status"] == "False"
    assert "request-success-rate" in cond["Promoted"]["message"]
    core = kubernetes.client.CoreV1Api(api_client)
    # the Events follow the status write (a tick tells people only about a decision it wrote)
    ops.wait_until(lambda: [e for e in core.list_namespaced_event(namespace).items
                            if e.type == "Warning" and e.involved_object.kind == "Canary"
                            and "request-success-rate" in (e.message or "")], 15, "the Warning Event")


def test_rollback_on_readiness(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, progressDeadlineSeconds=8)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                         annotations={"sim.canary.dev/ready": "false"})
    wait_phase(api_client, namespace, "podinfo", {"Progressing"}, 30, operator)
    started = time.monotonic()
    wait_phase(api_client, namespace, "podinfo", {"Failed", "Succeeded"}, 60, operator)
    took = time.monotonic() - started
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed"
    assert took >= 5, f"failed after {took:.1f}s, before the 8 s progress deadline"
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    assert st["lastFailure"]["message"]


def test_webhook_gates(api_client, namespace, operator, hooks):
    webhooks = [
        {"name": "pre", "type": "pre-rollout", "url": f"{hooks.url}/gate/pre", "timeout": "2s"},
        {"name": "approve", "type": "confirm-promotion", "url": f"{hooks.url}/gate/promote", "timeout": "2s"},
        {"name": "load", "type": "rollout", "url": f"{hooks.url}/ok", "timeout": "2s",
         "metadata": {"cmd": "hey -z 1m http://podinfo-canary:9898/"}},
    ]
    setup_canary(api_client, namespace, operator=operator, threshold=5, max_weight=20, step_weight=10,
                 webhooks=webhooks)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    # the pre-rollout gate is closed: each failure counts
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("failedChecks", 0) >= 1, 60,
                   "a failed pre-rollout check")
    assert ops.canary_status(api_client, namespace, "podinfo")["canaryWeight"] == 0
    hooks.open.add("pre")
    wait_phase(api_client, namespace, "podinfo", {"WaitingPromotion"}, 60, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["canaryWeight"] == 20  # the weight actually routed, not 0 as Flagger shows
    time.sleep(3)
    assert phase(api_client, namespace, "podinfo") == "WaitingPromotion"
    hooks.open.add("promote")
    wait_phase(api_client, namespace, "podinfo", {"Succeeded", "Failed"}, 60, operator)
    assert phase(api_client, namespace, "podinfo") == "Succeeded"
    # Flagger's payload shape
    payload = hooks.paths("/ok")[0]
    assert set(payload) == {"name", "namespace", "phase", "checksum", "metadata"}
    assert payload["name"] == "podinfo" and payload["namespace"] == namespace
    assert payload["phase"] == "Progressing" and payload["metadata"]["cmd"].startswith("hey")
    assert hooks.paths("/gate/promote")[0]["phase"] in ("Progressing", "WaitingPromotion")


def test_rollback_webhook(api_client, namespace, operator, hooks):
    webhooks = [{"name": "rb", "type": "rollback", "url": f"{hooks.url}/rollback/now", "timeout": "2s"}]
    setup_canary(api_client, namespace, operator=operator, max_weight=50, step_weight=5, webhooks=webhooks)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight", 0) >= 5, 60,
                   "traffic on the canary")
    hooks.open.add("now")
    wait_phase(api_client, namespace, "podinfo", {"Failed", "Succeeded"}, 60, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Failed"
    assert st["lastFailure"]["check"] == "rb"
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)


def test_bad_input(api_client, namespace, operator):
    # out-of-range fields are refused by the schema
    bad = canary("podinfo", max_weight=150)
    with pytest.raises(kubernetes.client.ApiException) as exc:
        ops.apply(api_client, bad, namespace)
    assert exc.value.status == 422 and "maxWeight" in exc.value.body
    # a Canary whose Deployment does not exist yet gets a condition and a Warning event
    ops.apply(api_client, canary("podinfo"), namespace)

    def reported():
        st = ops.canary_status(api_client, namespace, "podinfo")
        return any(c["type"] == "Stalled" and c["status"] == "True" and "not found" in (c.get("message") or "")
                   for c in st.get("conditions", []))

    ops.wait_until(reported, 30, "a condition about the missing Deployment")
    # the Warning event follows the status that decided it (notifications come after the write)
    core = kubernetes.client.CoreV1Api(api_client)
    ops.wait_until(lambda: any(e.type == "Warning" for e in core.list_namespaced_event(namespace).items),
                   10, "a Warning event about the missing Deployment")
    assert vs_weights(api_client, namespace, "podinfo") is None  # no traffic object was touched
    # once the Deployment exists it initializes
    ops.apply(api_client, deployment("podinfo"), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, operator)


def test_many_at_once(api_client, namespace, operator):
    n = 20
    for i in range(n):
        name = f"app{i:02d}"
        ops.apply(api_client, deployment(name), namespace)
        ops.apply(api_client, canary(name, max_weight=20, step_weight=10, threshold=2,
                                     metrics=[{"name": "request-success-rate", "thresholdRange": {"min": 99},
                                               "interval": "10s"}]), namespace)
    for i in range(n):
        wait_phase(api_client, namespace, f"app{i:02d}", {"Initialized"}, 90, operator)
    time.sleep(2)
    bad = {f"app{i:02d}" for i in range(0, n, 4)}  # every fourth release is bad
    for i in range(n):
        name = f"app{i:02d}"
        ops.patch_deployment(api_client, namespace, name, image=IMAGE2,
                             annotations={"sim.canary.dev/error-rate": "0.6" if name in bad else "0"})
    for i in range(n):
        wait_phase(api_client, namespace, f"app{i:02d}", {"Succeeded", "Failed"}, 180, operator)
    results = {f"app{i:02d}": phase(api_client, namespace, f"app{i:02d}") for i in range(n)}
    expected = {name: ("Failed" if name in bad else "Succeeded") for name in results}
    assert results == expected
