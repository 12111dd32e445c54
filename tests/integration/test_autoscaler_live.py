"""The primary HPA on the testbed's real API server (Kubernetes 1.20: autoscaling/v2beta2 is the
newest served version; the HPA controller runs, without a metrics server)."""

from __future__ import annotations


import pytest

from canary.adapters.autoscaler import Autoscalers, build_primary_hpa
from canary.adapters.kube import Kube
from canary.adapters.workload import Workloads
from canary.models import Canary

pytestmark = pytest.mark.testbed

PLURAL = "horizontalpodautoscalers"


@pytest.fixture
async def kube(testbed):
    k = Kube.from_config(testbed["operator_kubeconfig"])
    yield k
    await k.aclose()


def deployment(ns: str, replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"app": "podinfo"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "podinfo"}},
                 "template": {"metadata": {"labels": {"app": "podinfo"}},
                              "spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                                                       "resources": {"requests": {"cpu": "10m"}}}]}}},
    }


def target_hpa(ns: str, version: str) -> dict:
    return {
        "apiVersion": version, "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo", "namespace": ns,
                     "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "apps"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                         "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
        },
    }


async def make_canary(kube: Kube, ns: str, **ref) -> Canary:
    body = {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "suspend": True,  # an operator running on the shared testbed (end-to-end tests) leaves it alone
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            # as Flagger manifests say it; read and written at the served version anyway
            "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                              "name": "podinfo", **ref},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20},
        },
    }
    return Canary.from_obj(await kube.create("canary.dev/v1beta1", "canaries", ns, body))


def writes(kube: Kube, before: dict) -> int:
    return sum(kube.requests.get(v, 0) - before.get(v, 0) for v in ("create", "update", "patch", "delete"))


async def test_primary_hpa_created_at_init_and_updated_only_on_promotion(kube, namespace):
    ns = namespace
    scalers = Autoscalers(kube)
    version = await scalers.api_version()
    assert version == await kube.first_served("autoscaling", ["v2", "v2beta2"])
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns))
    source = await kube.create(version, PLURAL, ns, target_hpa(ns, version))
    canary = await make_canary(kube, ns)

    await Workloads(kube).initialize(canary, target)
    await scalers.reconcile(canary, init=True)
    primary = await kube.get(version, PLURAL, ns, "podinfo-primary")
    assert primary["apiVersion"] == version
    assert primary["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "podinfo-primary"}
    for field in ("minReplicas", "maxReplicas", "metrics", "behavior"):
        assert primary["spec"][field] == source["spec"][field], field
    assert primary["metadata"]["labels"] == {"app": "podinfo"}
    ref = primary["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"]) == ("Canary", "podinfo", canary.metadata["uid"])

    # idle: nothing written, on either path
    before = dict(kube.requests)
    await scalers.reconcile(canary, init=True)
    await scalers.reconcile(canary, init=False)
    assert writes(kube, before) == 0

    # a change to the target's HPA waits for a promotion
    source = await kube.patch(version, PLURAL, ns, "podinfo", {"spec": {"maxReplicas": 8}})
    await scalers.reconcile(canary, init=True)
    assert (await kube.get(version, PLURAL, ns, "podinfo-primary"))["spec"]["maxReplicas"] == 4
    await scalers.reconcile(canary, init=False)
    assert (await kube.get(version, PLURAL, ns, "podinfo-primary"))["spec"]["maxReplicas"] == 8
    before = dict(kube.requests)
    await scalers.reconcile(canary, init=False)
    assert writes(kube, before) == 0

    # the target's own HPA was left as it was (the unit test checks that no request writes it)
    after = await kube.get(version, PLURAL, ns, "podinfo")
    assert after["spec"] == source["spec"]
    assert after["metadata"]["labels"] == source["metadata"]["labels"]


async def test_primary_scaler_replicas_and_older_source_versions(kube, namespace):
    ns = namespace
    scalers = Autoscalers(kube)
    version = await scalers.api_version()
    await kube.create("apps/v1", "deployments", ns, deployment(ns))
    await kube.create(version, PLURAL, ns, target_hpa(ns, version))
    canary = await make_canary(kube, ns, primaryScalerReplicas={"minReplicas": 3, "maxReplicas": 6})
    await scalers.reconcile(canary, init=True)
    primary = await kube.get(version, PLURAL, ns, "podinfo-primary")
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (3, 6)

    # the same HPA read as v2beta1 (old field names) converts to the same metrics
    if await kube.served("autoscaling", "v2beta1"):
        old = await kube.get("autoscaling/v2beta1", PLURAL, ns, "podinfo")
        assert "targetAverageUtilization" in old["spec"]["metrics"][0]["resource"]
        built = build_primary_hpa(canary, old, version)
        assert built["spec"]["metrics"] == primary["spec"]["metrics"]
    # and what we build from a v1 read is accepted by the server
    v1 = await kube.get("autoscaling/v1", PLURAL, ns, "podinfo")
    built = build_primary_hpa(canary, v1, version)
    built["metadata"]["name"] = "from-v1"
    stored = await kube.create(version, PLURAL, ns, built)
    assert stored["spec"]["metrics"] == primary["spec"]["metrics"]


async def test_promotion_keeps_the_primary_replicas_with_an_hpa(kube, namespace):
    """Flagger #1600: the promoted primary must not fall back to a lower replica count."""
    ns = namespace
    scalers = Autoscalers(kube)
    version = await scalers.api_version()
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns, replicas=2))
    await kube.create(version, PLURAL, ns, target_hpa(ns, version))
    canary = await make_canary(kube, ns)
    w = Workloads(kube)
    await w.initialize(canary, target)
    await scalers.reconcile(canary, init=True)
    # the HPA scaled the primary out (within its bounds 2..4, so the controller leaves it there)
    await kube.patch("apps/v1", "deployments", ns, "podinfo-primary", {"spec": {"replicas": 4}})
    # a merge patch: the deployment controller keeps writing the target's status meanwhile
    new = await kube.patch("apps/v1", "deployments", ns, "podinfo", {"spec": {"template": {"spec": {
        "containers": [{"name": target["spec"]["template"]["spec"]["containers"][0]["name"],
                        "image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}}, kind="strategic")
    await w.promote(canary, new, "r2")
    await scalers.reconcile(canary, init=False)
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["replicas"] == 4
