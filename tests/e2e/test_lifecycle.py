"""Lifecycle of a Canary through the operator process on the testbed: config tracking, the
primary HPA, skipAnalysis, suspend, revertOnDeletion and taking over live traffic.

Every test uses its own namespace; the operator (module fixture) watches all of them.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment, routed
from tests.e2e.test_operator import phase, setup_canary, vs_weights, wait_phase

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"
REVISION = "canary.dev/revision"


def _apps(api_client):
    return kubernetes.client.AppsV1Api(api_client)


def _core(api_client):
    return kubernetes.client.CoreV1Api(api_client)


def _get(api_client, api_version: str, kind: str, ns: str, name: str) -> dict | None:
    """Any object as a dict (None when missing), through the dynamic client."""
    api = kubernetes.dynamic.DynamicClient(api_client).resources.get(api_version=api_version, kind=kind)
    try:
        return api.get(name=name, namespace=ns).to_dict()
    except kubernetes.dynamic.exceptions.NotFoundError:
        return None


def _patch_canary(api_client, ns: str, name: str, spec: dict) -> None:
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        ops.GROUP, ops.VERSION, ns, "canaries", name, {"spec": spec})


def _controller_is_canary(obj: dict, name: str = "podinfo") -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("kind") == "Canary" and r.get("name") == name and r.get("controller") for r in refs)


def _replicas(api_client, ns: str, name: str) -> int:
    return _apps(api_client).read_namespaced_deployment(name, ns).spec.replicas or 0


def _run_to_end(api_client, ns, operator, timeout=120) -> tuple[set[int], set[int], str]:
    """Poll until Succeeded/Failed; returns (status weights seen, routed canary weights seen, phase)."""
    seen_status, seen_routes = set(), set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ops.canary_status(api_client, ns, "podinfo")
        seen_status.add(st.get("canaryWeight", 0))
        w = vs_weights(api_client, ns, "podinfo")
        if w:
            seen_routes.add(w[1])
        if st.get("phase") in ("Succeeded", "Failed"):
            return seen_status, seen_routes, st["phase"]
        time.sleep(0.2)
    print(operator.log_tail(80))
    pytest.fail(f"release did not finish in {timeout}s; weights seen {sorted(seen_status)}")


# ---- 1. config tracking --------------------------------------------------------------------


def test_config_tracking(api_client, namespace, operator):
    core = _core(api_client)
    ops.apply(api_client, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config"},
                           "data": {"color": "blue"}}, namespace)
    ops.apply(api_client, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "podinfo-secret"},
                           "type": "Opaque", "stringData": {"token": "s3cret"}}, namespace)
    dep = deployment("podinfo")
    pod = dep["spec"]["template"]["spec"]
    pod["containers"][0]["envFrom"] = [{"configMapRef": {"name": "podinfo-config"}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "secret", "mountPath": "/etc/secret"}]
    pod["volumes"] = [{"name": "secret", "secret": {"secretName": "podinfo-secret"}}]
    ops.apply(api_client, dep, namespace)
    ops.apply(api_client, canary("podinfo", max_weight=20, step_weight=10), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, operator)

    cm_copy = core.read_namespaced_config_map("podinfo-config-primary", namespace)
    assert cm_copy.data == {"color": "blue"}
    assert _controller_is_canary(api_client.sanitize_for_serialization(cm_copy))
    sec_copy = core.read_namespaced_secret("podinfo-secret-primary", namespace)
    assert set(sec_copy.data) == {"token"}
    assert _controller_is_canary(api_client.sanitize_for_serialization(sec_copy))

    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    ppod = primary.spec.template.spec
    assert ppod.containers[0].env_from[0].config_map_ref.name == "podinfo-config-primary"
    assert ppod.volumes[0].secret.secret_name == "podinfo-secret-primary"
    rev_before = primary.spec.template.metadata.annotations[REVISION]
    tracked = ops.canary_status(api_client, namespace, "podinfo").get("trackedConfigs") or {}
    assert {"configmap/podinfo-config", "secret/podinfo-secret"} <= set(tracked), tracked
    target_template = _apps(api_client).read_namespaced_deployment("podinfo", namespace).spec.template

    # only the ConfigMap's data changes: a new revision, analysed and promoted
    core.patch_namespaced_config_map("podinfo-config", namespace, {"data": {"color": "green"}})
    wait_phase(api_client, namespace, "podinfo", {"Progressing"}, 30, operator)
    # the copy is written at promotion, not before
    assert core.read_namespaced_config_map("podinfo-config-primary", namespace).data == {"color": "blue"}
    _, _, end = _run_to_end(api_client, namespace, operator)
    assert end == "Succeeded"

    assert core.read_namespaced_config_map("podinfo-config-primary", namespace).data == {"color": "green"}
    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.metadata.annotations[REVISION] != rev_before
    assert primary.spec.template.spec.containers[0].env_from[0].config_map_ref.name == "podinfo-config-primary"
    # the target's pod template was never written
    assert _apps(api_client).read_namespaced_deployment("podinfo", namespace).spec.template == target_template
    tracked_after = ops.canary_status(api_client, namespace, "podinfo")["trackedConfigs"]
    assert tracked_after["configmap/podinfo-config"] != tracked["configmap/podinfo-config"]
    assert tracked_after["secret/podinfo-secret"] == tracked["secret/podinfo-secret"]


# ---- 2. HPA --------------------------------------------------------------------------------


def test_hpa_primary_keeps_replicas(api_client, namespace, operator):
    ops.apply(api_client, deployment("podinfo"), namespace)
    ops.apply(api_client, {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
    }, namespace)
    ops.apply(api_client, canary("podinfo", max_weight=20, step_weight=10, autoscalerRef={
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, operator)

    hpa = ops.wait_until(lambda: _get(api_client, "autoscaling/v2beta2", "HorizontalPodAutoscaler", namespace,
                                      "podinfo-primary"), 20, "the primary HPA")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert _controller_is_canary(hpa)

    # the HPA has been sizing the primary for live traffic: 3 replicas
    _apps(api_client).patch_namespaced_deployment_scale("podinfo-primary", namespace, {"spec": {"replicas": 3}})
    ops.wait_until(lambda: (_apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
                            .status.available_replicas or 0) >= 3, 30, "3 primary replicas available")
    time.sleep(6)  # one HPA sync period (5 s on the testbed): without metrics it leaves 3 alone
    assert _replicas(api_client, namespace, "podinfo-primary") == 3

    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    _, _, end = _run_to_end(api_client, namespace, operator)
    assert end == "Succeeded"
    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    assert primary.spec.replicas >= 3, "promotion dropped the primary to the HPA minimum (Flagger #1600)"


# ---- 3. skipAnalysis -----------------------------------------------------------------------


def test_skip_analysis(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, skipAnalysis=True)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    seen_status, seen_routes, end = _run_to_end(api_client, namespace, operator, timeout=60)
    assert end == "Succeeded"
    assert seen_status == {0}, seen_status
    assert seen_routes == {0}, seen_routes
    # the decision (Succeeded) is written before its effects: the primary's template follows
    ops.wait_until(lambda: _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
                   .spec.template.spec.containers[0].image == IMAGE2, 20, "the primary promoted")
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    ops.wait_until(lambda: _replicas(api_client, namespace, "podinfo") == 0, 20, "target scaled back to zero")


# ---- 4. suspend ----------------------------------------------------------------------------


def test_suspend(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=20, step_weight=10)
    ops.wait_until(lambda: _replicas(api_client, namespace, "podinfo") == 0, 20, "target scaled to zero")
    _patch_canary(api_client, namespace, "podinfo", {"suspend": True})
    time.sleep(2)  # let the operator see the suspension before the new revision
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    # suspended: no ticks at all, for several intervals
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert phase(api_client, namespace, "podinfo") == "Initialized"
        assert _replicas(api_client, namespace, "podinfo") == 0
        assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
        time.sleep(0.5)
    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image != IMAGE2

    _patch_canary(api_client, namespace, "podinfo", {"suspend": False})
    seen_status, _, end = _run_to_end(api_client, namespace, operator)
    assert end == "Succeeded"
    assert {10, 20} <= seen_status, seen_status
    primary = _apps(api_client).read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2


# ---- 5. revertOnDeletion -------------------------------------------------------------------


def test_revert_on_deletion(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, revertOnDeletion=True)
    apps, core = _apps(api_client), _core(api_client)
    ops.wait_until(lambda: _replicas(api_client, namespace, "podinfo") == 0, 20, "target scaled to zero")
    obj = ops.get_canary(api_client, namespace, "podinfo")
    assert "canary.dev/finalizer" in (obj["metadata"].get("finalizers") or [])

    kubernetes.client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        ops.GROUP, ops.VERSION, namespace, "canaries", "podinfo")
    try:
        ops.wait_until(lambda: ops.get_canary(api_client, namespace, "podinfo") is None, 60, "the Canary gone")
    except TimeoutError:
        print(operator.log_tail(60))
        raise

    target = apps.read_namespaced_deployment("podinfo", namespace)
    assert target.spec.replicas >= 1
    assert (target.status.available_replicas or 0) >= 1
    assert "canary.dev/replicas" not in (target.metadata.annotations or {})
    apex = core.read_namespaced_service("podinfo", namespace)
    assert apex.spec.selector == {"app": "podinfo"}
    assert not [r for r in apex.metadata.owner_references or [] if r.kind == "Canary"]

    def primary_gone():
        try:
            apps.read_namespaced_deployment("podinfo-primary", namespace)
            return False
        except kubernetes.client.ApiException as e:
            return e.status == 404

    ops.wait_until(primary_gone, 60, "the primary garbage collected")
    time.sleep(2)  # the apex Service survives garbage collection
    assert core.read_namespaced_service("podinfo", namespace).spec.selector == {"app": "podinfo"}


# ---- 6. takeover without downtime ----------------------------------------------------------


def _five_o_threes(ns: str, window_s: int) -> float:
    v = ops.prom_value(
        f'sum(increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",'
        f'response_code="503"}}[{window_s}s]))')
    return v or 0.0


def test_takeover_without_downtime(api_client, namespace, operator):
    ops.apply(api_client, deployment("podinfo"), namespace)
    ops.wait_until(lambda: (_apps(api_client).read_namespaced_deployment("podinfo", namespace)
                            .status.available_replicas or 0) >= 1, 30, "the target available")
    ops.apply(api_client, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"},
                           "spec": {"selector": {"app": "podinfo"},
                                    "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}}, namespace)
    original_route = [{"destination": {"host": "podinfo"}, "weight": 100}]
    ops.apply(api_client, {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                           "metadata": {"name": "podinfo"},
                           "spec": {"hosts": ["podinfo"], "http": [{"route": original_route}]}}, namespace)
    ops.wait_until(lambda: (ops.request_rate(namespace, "podinfo") or 0) > 0, 45, "live traffic on podinfo")
    before = time.monotonic()
    assert _five_o_threes(namespace, 30) == 0

    ops.apply(api_client, canary("podinfo"), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, operator)
    ops.wait_until(lambda: _replicas(api_client, namespace, "podinfo") == 0, 20, "target scaled to zero")
    ops.wait_until(lambda: (ops.request_rate(namespace, "podinfo-primary") or 0) > 0, 45,
                   "live traffic on podinfo-primary")
    time.sleep(5)  # a scrape after the switch
    window = int(time.monotonic() - before) + 5
    assert _five_o_threes(namespace, window) == 0, f"503s during the takeover (window {window}s)"

    vs = _get(api_client, "networking.istio.io/v1beta1", "VirtualService", namespace, "podinfo")
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    hosts = {r["destination"]["host"] for r in vs["spec"]["http"][-1]["route"]}
    assert hosts == {"podinfo-primary", "podinfo-canary"}
    assert "canary.dev/original-configuration" in (vs["metadata"].get("annotations") or {})
    apex = _core(api_client).read_namespaced_service("podinfo", namespace)
    assert apex.spec.selector == {"app": "podinfo-primary"}
