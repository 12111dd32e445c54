"""The primary HPA: exact shapes for v2 and v2beta2 sources and outputs, conversions from the
older versions, overrides, and the create-at-init / update-on-promotion rule."""

from __future__ import annotations

import copy

import pytest

from canary.adapters.autoscaler import (
    AutoscalerError,
    Autoscalers,
    build_primary_hpa,
    hpa_spec_as,
)
from canary.models import Canary
from tests.unit.fakeapi import DEFAULT_GROUPS, FakeApiServer

NS = "test"
OWNER = {"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "uid-1",
         "controller": True, "blockOwnerDeletion": True}
BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "tolerance": "0.05",
                  "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
}
METRICS_V2 = [
    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
    {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
]


def make_canary(replicas: dict | None = None, kind: str = "HorizontalPodAutoscaler", ref: bool = True) -> Canary:
    spec: dict = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10},
    }
    if ref:
        spec["autoscalerRef"] = {"apiVersion": "autoscaling/v2", "kind": kind, "name": "podinfo-hpa"}
        if replicas:
            spec["autoscalerRef"]["primaryScalerReplicas"] = replicas
    return Canary.from_obj({"apiVersion": "canary.dev/v1beta1", "kind": "Canary",
                            "metadata": {"name": "podinfo", "namespace": NS, "uid": "uid-1"}, "spec": spec})


def hpa(version: str = "v2", **spec) -> dict:
    return {
        "apiVersion": f"autoscaling/{version}", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo-hpa", "namespace": NS, "resourceVersion": "7", "uid": "h",
                     "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "minReplicas": 2, "maxReplicas": 6, **spec},
        "status": {"currentReplicas": 0},
    }


@pytest.mark.parametrize("src_version", ["v2", "v2beta2"])
@pytest.mark.parametrize("out_version", ["v2", "v2beta2"])
def test_primary_hpa_shape(src_version, out_version):
    src = hpa(src_version, metrics=copy.deepcopy(METRICS_V2), behavior=copy.deepcopy(BEHAVIOR))
    out = build_primary_hpa(make_canary(), src, f"autoscaling/{out_version}")
    behavior = copy.deepcopy(BEHAVIOR)
    if out_version == "v2beta2":
        del behavior["scaleDown"]["tolerance"]  # not a v2beta2 field
    assert out == {
        "apiVersion": f"autoscaling/{out_version}",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo-hpa-primary", "namespace": NS, "labels": {"app": "podinfo"},
                     "ownerReferences": [OWNER]},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"},
                 "minReplicas": 2, "maxReplicas": 6, "metrics": METRICS_V2, "behavior": behavior},
    }
    assert src["spec"]["behavior"]["scaleDown"]["tolerance"] == "0.05", "the source is not modified"


def test_primary_scaler_replicas_override():
    out = build_primary_hpa(make_canary({"minReplicas": 3, "maxReplicas": 12}), hpa(), "autoscaling/v2")
    assert (out["spec"]["minReplicas"], out["spec"]["maxReplicas"]) == (3, 12)
    out = build_primary_hpa(make_canary({"maxReplicas": 9}), hpa(), "autoscaling/v2")
    assert (out["spec"]["minReplicas"], out["spec"]["maxReplicas"]) == (2, 9)
    with pytest.raises(AutoscalerError, match="minReplicas 8 is greater than maxReplicas 6"):
        build_primary_hpa(make_canary({"minReplicas": 8}), hpa(), "autoscaling/v2")


def test_from_v2beta1():
    metrics = [
        {"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 80}},
        {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}},
        {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10",
                                  "selector": {"matchLabels": {"a": "b"}}}},
        {"type": "Object", "object": {"target": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                                      "metricName": "hits", "targetValue": "5"}},
        {"type": "External", "external": {"metricName": "queue", "metricSelector": {"matchLabels": {"q": "1"}},
                                          "targetAverageValue": "30"}},
        {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                                                            "targetAverageUtilization": 60}},
    ]
    out = build_primary_hpa(make_canary(), hpa("v2beta1", metrics=metrics), "autoscaling/v2beta2")
    assert out["apiVersion"] == "autoscaling/v2beta2"
    assert out["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
        {"type": "Resource", "resource": {"name": "memory",
                                          "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
        {"type": "Pods", "pods": {"metric": {"name": "rps", "selector": {"matchLabels": {"a": "b"}}},
                                  "target": {"type": "AverageValue", "averageValue": "10"}}},
        {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "s"},
                                      "metric": {"name": "hits"}, "target": {"type": "Value", "value": "5"}}},
        {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "1"}}},
                                          "target": {"type": "AverageValue", "averageValue": "30"}}},
        {"type": "ContainerResource", "containerResource": {
            "name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}},
    ]


def test_from_v1():
    src = hpa("v1", targetCPUUtilizationPercentage=65)
    out = build_primary_hpa(make_canary(), src, "autoscaling/v2")
    assert out["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}]
    assert "targetCPUUtilizationPercentage" not in out["spec"]
    assert hpa_spec_as({"maxReplicas": 2}, "v1", "v2") == {"maxReplicas": 2}
    with pytest.raises(AutoscalerError):
        hpa_spec_as({"maxReplicas": 2}, "v2", "v1")


# ---- applier against an in-memory API ------------------------------------------------------------


def world(version: str = "v2beta2"):
    api = FakeApiServer({**DEFAULT_GROUPS, "autoscaling": ["v1", version]})
    api.put(hpa(version, metrics=copy.deepcopy(METRICS_V2)))
    return api, api.kube()


def writes(api) -> int:
    return sum(1 for r in api.requests if r.verb in ("create", "update", "patch", "delete"))


@pytest.mark.parametrize("version", ["v2", "v2beta2"])
async def test_created_at_init_updated_only_on_promotion(version):
    api, kube = world(version)
    scalers = Autoscalers(kube)
    assert await scalers.api_version() == f"autoscaling/{version}"
    canary = make_canary()
    await scalers.reconcile(canary, init=True)
    primary = api.get("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa-primary")
    assert primary["apiVersion"] == f"autoscaling/{version}"
    assert primary["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"
    assert primary["spec"]["maxReplicas"] == 6
    # the target's HPA changes: not applied at init, applied on promotion
    src = api.get("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa")
    src["spec"]["maxReplicas"] = 10
    api.objects[("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa")] = src
    before = writes(api)
    await scalers.reconcile(canary, init=True)
    assert writes(api) == before
    assert api.get("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa-primary")["spec"]["maxReplicas"] == 6
    await scalers.reconcile(canary, init=False)
    assert api.get("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa-primary")["spec"]["maxReplicas"] == 10
    before = writes(api)
    await scalers.reconcile(canary, init=False)
    assert writes(api) == before, "an unchanged HPA must not be written"
    # the target's own HPA is never written
    assert not [r for r in api.requests if r.name == "podinfo-hpa" and r.verb != "get"]


async def test_without_an_autoscaler_nothing_happens():
    api, kube = world()
    assert await Autoscalers(kube).reconcile(make_canary(ref=False), init=True) is None
    assert api.requests == []


async def test_keda_and_missing_hpas_are_reported():
    api, kube = world()
    with pytest.raises(AutoscalerError, match="ScaledObject is not supported"):
        await Autoscalers(kube).reconcile(make_canary(kind="ScaledObject"), init=True)
    del api.objects[("autoscaling", NS, "horizontalpodautoscalers", "podinfo-hpa")]
    with pytest.raises(AutoscalerError, match="not found"):
        await Autoscalers(kube).reconcile(make_canary(), init=True)


async def test_no_served_hpa_version_is_an_error():
    api = FakeApiServer({**DEFAULT_GROUPS, "autoscaling": ["v1"]})
    with pytest.raises(AutoscalerError, match="serves neither"):
        await Autoscalers(api.kube()).reconcile(make_canary(), init=True)


async def test_a_foreign_primary_hpa_is_not_overwritten():
    api, kube = world()
    foreign = hpa("v2beta2")
    foreign["metadata"].update(name="podinfo-hpa-primary", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "x", "controller": True}])
    api.put(foreign)
    with pytest.raises(AutoscalerError, match="not managed"):
        await Autoscalers(kube).reconcile(make_canary(), init=False)
