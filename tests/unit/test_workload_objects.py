"""Primary Deployment and Services: exact shapes of the pure builders, and the applier's write
rules against an in-memory API (takeover, nodePorts, scaling, promotion, revert, no idle writes)."""

from __future__ import annotations

import copy

import pytest

from canary.adapters.kube import ApiError
from canary.adapters.workload import (
    FLUX_DISABLED,
    REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    WorkloadError,
    Workloads,
    build_primary_deployment,
    build_services,
    selector_label,
    service_ports,
)
from canary.models import Canary
from tests.unit.fakeapi import FakeApiServer, JsonPatchTestFailed, json_patch

OWNER = {
    "apiVersion": "canary.dev/v1beta1",
    "kind": "Canary",
    "name": "podinfo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def make_canary(service: dict | None = None, uid: str | None = "uid-1", **spec) -> Canary:
    meta = {"name": "podinfo", "namespace": "test"}
    if uid:
        meta["uid"] = uid
    return Canary.from_obj({
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": meta,
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10},
            **spec,
        },
    })


def make_target(selector: dict | None = None, replicas: int | None = 3) -> dict:
    selector = selector or {"app": "podinfo"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "podinfo",
            "namespace": "test",
            "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps"},
            "annotations": {
                "deployment.kubernetes.io/revision": "4",
                "kustomize.toolkit.fluxcd.io/checksum": "abc",
                "team": "web",
            },
        },
        "spec": {
            "progressDeadlineSeconds": 60,
            "minReadySeconds": 5,
            "revisionHistoryLimit": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {
                    "labels": {**selector, "version": "v1"},
                    "annotations": {"prometheus.io/scrape": "true",
                                    "helm.toolkit.fluxcd.io/x": "y"},
                },
                "spec": {
                    "containers": [
                        {"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                         "ports": [{"name": "http", "containerPort": 9898},
                                   {"name": "http-metrics", "containerPort": 9797},
                                   {"containerPort": 9999}],
                         "envFrom": [{"configMapRef": {"name": "podinfo-env"}}]},
                        {"name": "istio-proxy", "image": "istio/proxyv2",
                         "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]},
                    ],
                    "volumes": [{"name": "cfg", "configMap": {"name": "podinfo-config"}},
                                {"name": "sec", "secret": {"secretName": "podinfo-secret"}}],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "podinfo"}}}}]}},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["podinfo", "other"]}]}}],
                },
            },
        },
    }
    if replicas is not None:
        dep["spec"]["replicas"] = replicas
    return dep


# ---- primary Deployment ------------------------------------------------------------------------


def test_primary_deployment_shape():
    target = make_target()
    primary = build_primary_deployment(make_canary(), target, "rev1")
    assert primary["metadata"] == {
        "name": "podinfo-primary",
        "namespace": "test",
        "labels": {"app": "podinfo-primary"},
        "annotations": {"team": "web"},  # no toolkit.fluxcd.io keys, no deployment revision
        "ownerReferences": [OWNER],
    }
    spec = primary["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    for field in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy"):
        assert spec[field] == target["spec"][field]
    tmeta = spec["template"]["metadata"]
    assert tmeta["labels"] == {"app": "podinfo-primary", "version": "v1"}
    assert tmeta["annotations"] == {"prometheus.io/scrape": "true", REVISION_ANNOTATION: "rev1"}
    pod = spec["template"]["spec"]
    assert pod["containers"] == target["spec"]["template"]["spec"]["containers"]
    # selectors naming the target's pods now name the primary's
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"] == {"matchLabels": {"app": "podinfo-primary"}}
    expr = pod["topologySpreadConstraints"][0]["labelSelector"]["matchExpressions"][0]
    assert expr["values"] == ["podinfo-primary", "other"]
    # the target itself is not modified
    assert target == make_target()
    # deterministic: same inputs, same object
    assert build_primary_deployment(make_canary(), make_target(), "rev1") == primary


def test_primary_replicas_rules():
    canary = make_canary()
    assert build_primary_deployment(canary, make_target(replicas=0), "r")["spec"]["replicas"] == 1
    assert build_primary_deployment(canary, make_target(replicas=None), "r")["spec"]["replicas"] == 1
    scaled = make_target(replicas=0)
    scaled["metadata"]["annotations"][REPLICAS_ANNOTATION] = "4"
    assert build_primary_deployment(canary, scaled, "r")["spec"]["replicas"] == 4
    assert REPLICAS_ANNOTATION not in build_primary_deployment(canary, scaled, "r")["metadata"]["annotations"]
    hpa = make_canary(autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                     "name": "podinfo"})
    assert "replicas" not in build_primary_deployment(hpa, make_target(), "r")["spec"]
    assert build_primary_deployment(hpa, make_target(), "r", replicas=7)["spec"]["replicas"] == 7


@pytest.mark.parametrize("labels,expected", [
    ({"app": "podinfo"}, ("app", "podinfo")),
    ({"name": "podinfo"}, ("name", "podinfo")),
    ({"app.kubernetes.io/name": "podinfo", "tier": "web"}, ("app.kubernetes.io/name", "podinfo")),
    ({"name": "n", "app": "a"}, ("app", "a")),  # first of the list wins
])
def test_selector_label(labels, expected):
    assert selector_label(make_target(labels)) == expected


def test_selector_label_missing_is_a_clear_error():
    with pytest.raises(WorkloadError, match=r"podinfo.*none of the labels app, name, app.kubernetes.io/name"):
        build_primary_deployment(make_canary(), make_target({"tier": "web"}), "r")
    # configurable list
    dep = build_primary_deployment(make_canary(), make_target({"tier": "web"}), "r", selector_labels=["tier"])
    assert dep["spec"]["selector"] == {"matchLabels": {"tier": "web-primary"}}


def test_selector_rewrite_with_kubernetes_name_label():
    target = make_target({"app.kubernetes.io/name": "podinfo"})
    dep = build_primary_deployment(make_canary(), target, "r")
    assert dep["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "podinfo-primary"}}
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "podinfo-primary"


def test_tracked_config_refs_are_renamed():
    dep = build_primary_deployment(make_canary(), make_target(), "r",
                                   tracked_configs=["configmap/podinfo-config", "secret/podinfo-secret"])
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "cfg", "configMap": {"name": "podinfo-config-primary"}},
                              {"name": "sec", "secret": {"secretName": "podinfo-secret-primary"}}]
    assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": "podinfo-env"}}]  # not tracked


def test_no_owner_reference_without_uid():
    dep = build_primary_deployment(make_canary(uid=None), make_target(), "r")
    assert "ownerReferences" not in dep["metadata"]
    assert all("ownerReferences" not in s["metadata"] for s in build_services(make_canary(uid=None), make_target()))


# ---- Services ----------------------------------------------------------------------------------


def test_services_shape():
    canary = make_canary({
        "apex": {"labels": {"tier": "apex"}, "annotations": {"a": "1"}},
        "primary": {"labels": {"tier": "primary"}},
        "canary": {"annotations": {"c": "3"}},
    })
    apex, primary, canary_svc = build_services(canary, make_target())
    port = {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898}
    assert apex == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": "test",
                     "labels": {"tier": "apex", "app": "podinfo"},
                     "annotations": {"a": "1", **FLUX_DISABLED},
                     "ownerReferences": [OWNER]},
        "spec": {"type": "ClusterIP", "selector": {"app": "podinfo-primary"}, "ports": [port]},
    }
    assert primary["metadata"]["name"] == "podinfo-primary"
    assert primary["metadata"]["labels"] == {"tier": "primary", "app": "podinfo-primary"}
    assert primary["metadata"]["annotations"] == FLUX_DISABLED
    assert primary["spec"]["selector"] == {"app": "podinfo-primary"}
    assert canary_svc["metadata"]["name"] == "podinfo-canary"
    assert canary_svc["metadata"]["labels"] == {"app": "podinfo-canary"}
    assert canary_svc["metadata"]["annotations"] == {"c": "3", **FLUX_DISABLED}
    assert canary_svc["spec"]["selector"] == {"app": "podinfo"}


def test_service_name_port_options_and_headless():
    canary = make_canary({"name": "frontend", "portName": "grpc", "targetPort": "grpc-port",
                          "appProtocol": "grpc", "headless": True})
    apex, primary, canary_svc = build_services(canary, make_target())
    assert [s["metadata"]["name"] for s in (apex, primary, canary_svc)] == \
        ["frontend", "frontend-primary", "frontend-canary"]
    assert apex["metadata"]["labels"] == {"app": "frontend"}
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}  # selector uses the pod label value
    assert apex["spec"]["ports"] == [{"name": "grpc", "protocol": "TCP", "port": 9898,
                                      "targetPort": "grpc-port", "appProtocol": "grpc"}]
    assert all(s["spec"]["clusterIP"] == "None" for s in (apex, primary, canary_svc))


def test_port_discovery():
    ports = service_ports(make_canary({"portDiscovery": True}), make_target())
    assert ports == [
        {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898},
        {"name": "http-metrics", "protocol": "TCP", "port": 9797, "targetPort": 9797},
        {"name": "tcp-podinfod-2", "protocol": "TCP", "port": 9999, "targetPort": 9999},
    ]  # service.port skipped, istio-proxy skipped, unnamed port named tcp-<container>-<index>
    assert build_services(make_canary({"portDiscovery": True}), make_target())[2]["spec"]["ports"] == ports
    assert len(service_ports(make_canary(), make_target())) == 1


# ---- applier against an in-memory API ------------------------------------------------------------


def merge_patch(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    def __init__(self):
        self.objects: dict[tuple, dict] = {}
        self.requests: dict[str, int] = {}
        self._rv = 0

    @property
    def writes(self):
        return sum(self.requests.get(v, 0) for v in ("create", "update", "patch", "delete"))

    def _count(self, verb):
        self.requests[verb] = self.requests.get(verb, 0) + 1

    def _store(self, key, obj):
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 0) + 1
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def put(self, plural, obj):
        return self._store((plural, obj["metadata"]["namespace"], obj["metadata"]["name"]), obj)

    async def get(self, api_version, plural, namespace, name):
        self._count("get")
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create(self, api_version, plural, namespace, body):
        self._count("create")
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        return self._store(key, body)

    async def replace(self, api_version, plural, namespace, name, body):
        self._count("update")
        cur = self.objects[(plural, namespace, name)]
        if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale")
        body = copy.deepcopy(body)
        body["metadata"]["generation"] = cur["metadata"]["generation"]
        return self._store((plural, namespace, name), body)

    async def patch(self, api_version, plural, namespace, name, body, *, kind="merge", subresource=None):
        self._count("patch")
        cur = self.objects[(plural, namespace, name)]
        if kind == "json":
            try:
                return self._store((plural, namespace, name), json_patch(cur, body))
            except JsonPatchTestFailed:
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request") from None
        return self._store((plural, namespace, name), merge_patch(cur, body))


def ready(dep):
    dep = copy.deepcopy(dep)
    n = dep["spec"].get("replicas", 1)
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n,
                     "updatedReplicas": n, "availableReplicas": n, "readyReplicas": n}
    return dep


async def test_initialize_is_idempotent_and_takes_over_the_apex_only_when_the_primary_is_ready():
    kube = FakeKube()
    target = kube.put("deployments", make_target())
    kube.put("services", {"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "podinfo", "namespace": "test", "labels": {"own": "me"}},
                          "spec": {"type": "NodePort", "clusterIP": "10.0.0.7",
                                   "selector": {"app": "podinfo", "version": "v1"},
                                   "ports": [{"name": "http", "protocol": "TCP", "port": 9898,
                                              "targetPort": 9898, "nodePort": 30080}]}})
    w = Workloads(kube)
    canary = make_canary()
    await w.initialize(canary, target)
    primary = kube.objects[("deployments", "test", "podinfo-primary")]
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert ("services", "test", "podinfo-primary") in kube.objects
    assert ("services", "test", "podinfo-canary") in kube.objects
    # primary not ready yet: the live apex Service still selects the target's pods
    assert kube.objects[("services", "test", "podinfo")]["spec"]["selector"] == {"app": "podinfo", "version": "v1"}
    kube.objects[("deployments", "test", "podinfo-primary")] = ready(primary)
    await w.initialize(canary, target)
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}  # replaced, not merged
    assert apex["spec"]["type"] == "NodePort" and apex["spec"]["clusterIP"] == "10.0.0.7"
    assert apex["spec"]["ports"][0]["nodePort"] == 30080
    assert apex["metadata"]["labels"] == {"own": "me"}  # metadata of a taken-over Service kept
    assert "ownerReferences" not in apex["metadata"]
    writes = kube.writes
    await w.initialize(canary, target)
    assert kube.writes == writes, "an idle initialize must not write"


async def test_owned_services_keep_only_unmanaged_foreign_metadata():
    kube = FakeKube()
    target = kube.put("deployments", make_target())
    canary = make_canary({"unmanagedMetadata": {"annotations": ["keep.me/x"]}})
    w = Workloads(kube)
    await w.initialize(canary, target)
    key = ("services", "test", "podinfo-canary")
    kube.objects[key]["metadata"]["annotations"].update({"keep.me/x": "1", "drop.me/y": "2"})
    await w.initialize(canary, target)
    assert kube.objects[key]["metadata"]["annotations"] == {"keep.me/x": "1", **FLUX_DISABLED}


async def test_scale_target_down_and_up():
    kube = FakeKube()
    target = kube.put("deployments", make_target(replicas=3))
    w = Workloads(kube)
    canary = make_canary()
    target = await w.scale_target(canary, target, up=False)
    stored = kube.objects[("deployments", "test", "podinfo")]
    assert stored["spec"]["replicas"] == 0
    assert stored["metadata"]["annotations"][REPLICAS_ANNOTATION] == "3"
    writes = kube.writes
    assert await w.scale_target(canary, target, up=False) is target and kube.writes == writes
    target = await w.scale_target(canary, target, up=True)
    assert kube.objects[("deployments", "test", "podinfo")]["spec"]["replicas"] == 3
    # no recorded count: the primary's replicas
    kube2 = FakeKube()
    bare = kube2.put("deployments", make_target(replicas=0))
    kube2.put("deployments", {"metadata": {"name": "podinfo-primary", "namespace": "test"}, "spec": {"replicas": 5}})
    await Workloads(kube2).scale_target(canary, bare, up=True)
    assert kube2.objects[("deployments", "test", "podinfo")]["spec"]["replicas"] == 5


async def test_promote_copies_template_and_keeps_hpa_replicas():
    kube = FakeKube()
    hpa = make_canary(autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                     "name": "podinfo"})
    target = kube.put("deployments", make_target(replicas=2))
    w = Workloads(kube)
    await w.initialize(hpa, target, revision="r1")
    assert kube.objects[("deployments", "test", "podinfo-primary")]["spec"]["replicas"] == 2
    kube.objects[("deployments", "test", "podinfo-primary")]["spec"]["replicas"] = 6  # scaled by the HPA
    new = make_target(replicas=2)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    new["spec"]["minReadySeconds"] = 9
    new = kube.put("deployments", new)
    await w.promote(hpa, new, "r2")
    primary = kube.objects[("deployments", "test", "podinfo-primary")]
    assert primary["spec"]["replicas"] == 6  # not reset (Flagger #1600)
    assert primary["spec"]["minReadySeconds"] == 9
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION] == "r2"
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    writes = kube.writes
    await w.promote(hpa, new, "r2")
    assert kube.writes == writes, "promoting the same revision again must not write"
    # without an autoscaler the target's replicas are copied
    await w.promote(make_canary(), new, "r2")
    assert kube.objects[("deployments", "test", "podinfo-primary")]["spec"]["replicas"] == 2


async def test_promote_is_not_defeated_by_status_writes_and_retries_a_changed_spec():
    """Seen in CI (tests/integration/test_autoscaler_live.py): the deployment controller wrote the
    primary's status between each read and the promotion's PUT (three 409s, the promotion
    failed). The promotion is a JSON patch of the spec on the condition of the generation, which
    status writes leave alone; a spec changed meanwhile (the HPA) is read again."""
    api = FakeApiServer()
    kube = api.kube()
    target = api.put({**make_target(replicas=2), "apiVersion": "apps/v1", "kind": "Deployment"})
    hpa = make_canary(autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                     "name": "podinfo"})
    w = Workloads(kube)
    await w.initialize(hpa, target, revision="r1")
    key = ("apps", "test", "deployments", "podinfo-primary")
    handle, reads = api.handle, []

    def churn(request):  # after every read of the primary, the controller writes its status
        answer = handle(request)
        if request.method == "GET" and request.url.path.endswith("/deployments/podinfo-primary"):
            reads.append(1)
            obj = api.objects[key]
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": len(reads)}
            obj["metadata"]["resourceVersion"] = api._next_rv()
            if len(reads) == 1:  # and once, the HPA scales it out before the first write
                obj["spec"]["replicas"] = 4
                obj["metadata"]["generation"] += 1
        return answer

    api.handle = churn  # type: ignore[method-assign]
    kube = api.kube()
    new = make_target(replicas=2)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    await Workloads(kube).promote(hpa, new, "r2")
    primary = api.objects[key]
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["replicas"] == 4  # the HPA's count, read again after the failed test
    assert len(reads) == 2


async def test_revert_points_apex_at_target_and_drops_owner():
    kube = FakeKube()
    target = kube.put("deployments", make_target(replicas=3))
    w = Workloads(kube)
    canary = make_canary()
    await w.initialize(canary, target)
    target = await w.scale_target(canary, target, up=False)
    await w.revert(canary, target)
    assert kube.objects[("deployments", "test", "podinfo")]["spec"]["replicas"] == 3
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    assert "ownerReferences" not in apex["metadata"]


async def test_finalize_waits_for_the_target_before_handing_it_the_traffic():
    kube = FakeKube()
    target = kube.put("deployments", make_target(replicas=3))
    w = Workloads(kube)
    canary = make_canary()
    await w.initialize(canary, target)
    kube.objects[("deployments", "test", "podinfo-primary")]["spec"]["replicas"] = 5  # scaled by an HPA
    target = await w.scale_target(canary, target, up=False)
    result = await w.finalize(canary, target)
    stored = kube.objects[("deployments", "test", "podinfo")]
    assert stored["spec"]["replicas"] == 5, "the target gets the primary's replicas"
    assert REPLICAS_ANNOTATION not in stored["metadata"]["annotations"]
    assert not result.done and not result.target.ready and result.replicas == 5
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}, "not before the target is ready"
    assert apex["metadata"]["ownerReferences"]
    writes = kube.writes
    result = await w.finalize(canary, ready(stored))
    assert result.done and result.target.ready
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    assert "ownerReferences" not in apex["metadata"]
    assert kube.writes == writes + 1  # the apex Service only
    writes = kube.writes
    assert (await w.finalize(canary, ready(kube.objects[("deployments", "test", "podinfo")]))).done
    assert kube.writes == writes, "finalize is idempotent"


async def test_finalize_restores_a_taken_over_service():
    kube = FakeKube()
    target = kube.put("deployments", make_target(replicas=1))
    original = {"type": "NodePort", "selector": {"app": "podinfo", "version": "v1"},
                "ports": [{"name": "web", "protocol": "TCP", "port": 80, "targetPort": 9898, "nodePort": 30080}]}
    kube.put("services", {"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "podinfo", "namespace": "test", "annotations": {"team": "web"}},
                          "spec": copy.deepcopy(original)})
    w = Workloads(kube)
    canary = make_canary()
    await w.initialize(canary, target)
    kube.objects[("deployments", "test", "podinfo-primary")] = ready(
        kube.objects[("deployments", "test", "podinfo-primary")])
    await w.initialize(canary, target)
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}
    assert "canary.dev/original-service" in apex["metadata"]["annotations"]
    writes = kube.writes
    await w.initialize(canary, target)
    assert kube.writes == writes
    await w.finalize(canary, ready(kube.objects[("deployments", "test", "podinfo")]))
    apex = kube.objects[("services", "test", "podinfo")]
    assert apex["spec"]["selector"] == original["selector"]
    assert apex["spec"]["ports"] == original["ports"]
    assert apex["metadata"]["annotations"] == {"team": "web"}


async def test_finalize_falls_back_to_last_applied_configuration():
    kube = FakeKube()
    target = kube.put("deployments", make_target(replicas=1))
    last = '{"apiVersion":"v1","kind":"Service","spec":{"selector":{"app":"podinfo","tier":"web"}}}'
    kube.put("services", {"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "podinfo", "namespace": "test",
                                       "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
                          "spec": {"selector": {"app": "podinfo-primary"},
                                   "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}})
    result = await Workloads(kube).finalize(make_canary(), ready(target))
    assert result.done
    assert kube.objects[("services", "test", "podinfo")]["spec"]["selector"] == {"app": "podinfo", "tier": "web"}


# ---- ownership: no confused deputy (issue 10) -------------------------------------------------

OTHER_CANARY = {"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "name": "other", "uid": "uid-other",
                "controller": True, "blockOwnerDeletion": True}


async def test_a_target_controlled_by_a_canary_or_named_primary_is_refused():
    from canary.adapters.workload import WorkloadError

    kube = FakeKube()
    target = make_target()
    target["metadata"]["ownerReferences"] = [OTHER_CANARY]
    kube.put("deployments", target)
    with pytest.raises(WorkloadError, match="controlled by Canary other"):
        await Workloads(kube).initialize(make_canary(), target)
    canary = make_canary(targetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-primary"},
                         service={"name": "shop"})
    with pytest.raises(WorkloadError, match="ends in -primary"):
        await Workloads(kube).initialize(canary, make_target())
    assert kube.writes == 0  # nothing written (put does not count)


@pytest.mark.parametrize("owners", [[], [OTHER_CANARY], [{**OWNER, "uid": "uid-of-a-deleted-canary"}]])
async def test_an_existing_primary_is_reused_only_when_this_canary_controls_it(owners):
    from canary.adapters.workload import WorkloadError

    kube = FakeKube()
    target = kube.put("deployments", make_target())
    squatter = build_primary_deployment(make_canary(), target, "r0")
    squatter["metadata"]["ownerReferences"] = owners
    if not owners:
        squatter["metadata"].pop("ownerReferences")
    kube.put("deployments", squatter)
    writes = kube.writes
    with pytest.raises(WorkloadError, match="not controlled by this Canary"):
        await Workloads(kube).initialize(make_canary(), target)
    assert kube.writes == writes
    # ours: reused
    squatter["metadata"]["ownerReferences"] = [OWNER]
    kube.put("deployments", squatter)
    await Workloads(kube).initialize(make_canary(), target)


async def test_a_service_another_controller_owns_is_not_taken_over():
    from canary.adapters.workload import WorkloadError

    kube = FakeKube()
    target = kube.put("deployments", make_target())
    kube.put("services", {"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "podinfo-canary", "namespace": "test",
                                       "ownerReferences": [OTHER_CANARY]},
                          "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}})
    with pytest.raises(WorkloadError, match="service podinfo-canary is controlled by Canary other"):
        await Workloads(kube).initialize(make_canary(), target)
    assert kube.objects[("services", "test", "podinfo-canary")]["spec"]["selector"] == {"app": "other"}


def test_a_selector_label_value_without_room_for_primary_is_a_clear_error():
    from canary.adapters.workload import WorkloadError

    with pytest.raises(WorkloadError, match="longer than 55"):
        build_primary_deployment(make_canary(), make_target(selector={"app": "a" * 56}), "r1")
    assert build_primary_deployment(make_canary(), make_target(selector={"app": "a" * 55}), "r1")


async def test_promote_reports_a_refused_spec_at_once():
    """A 422 that is not the failed `test` (the generation did not move): the API server's own
    error, on the second read, not a retry loop ending in "kept changing"."""
    api = FakeApiServer()
    target = api.put({**make_target(replicas=2), "apiVersion": "apps/v1", "kind": "Deployment"})
    w = Workloads(api.kube())
    await w.initialize(make_canary(), target, revision="r1")
    api.fail_next[("deployments", "patch")] = 422
    new = make_target(replicas=2)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    with pytest.raises(ApiError) as e:
        await w.promote(make_canary(), new, "r2")
    assert e.value.status == 422
