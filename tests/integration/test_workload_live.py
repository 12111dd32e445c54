"""Workloads against the real API server of the testbed (Deployments made Available by the pod
simulator, garbage collection by the real kube-controller-manager)."""

from __future__ import annotations

import asyncio
import time

import pytest

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload import REPLICAS_ANNOTATION, REVISION_ANNOTATION, Workloads
from canary.models import Canary
from canary.revision import template_hash

pytestmark = pytest.mark.testbed


async def until(fn, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def deployment(ns: str, name: str = "podinfo", image: str = "ghcr.io/stefanprodan/podinfo:6.0.0",
               replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                     "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "x"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "podinfod", "image": image,
                    "ports": [{"name": "http", "containerPort": 9898},
                              {"name": "http-metrics", "containerPort": 9797}],
                }]},
            },
        },
    }


def canary_body(ns: str, name: str = "podinfo", service: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "suspend": True,  # an operator running on the shared testbed (end-to-end tests) leaves it alone
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20},
            **spec,
        },
    }


async def make_canary(kube: Kube, body: dict) -> Canary:
    """The Canary as stored (with a uid for owner references); owner-less if the CRD is missing."""
    if await kube.served("canary.dev", "v1beta1"):
        return Canary.from_obj(await kube.create("canary.dev/v1beta1", "canaries",
                                                 body["metadata"]["namespace"], body))
    return Canary.from_obj(body)


@pytest.fixture
async def kube(testbed):
    k = Kube.from_config(testbed.get("operator_kubeconfig") or testbed["kubeconfig"])
    yield k
    await k.aclose()


def available(dep: dict | None) -> bool:
    if not dep:
        return False
    st = dep.get("status") or {}
    want = dep["spec"].get("replicas", 1)
    return (st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and st.get("updatedReplicas", 0) == want and st.get("availableReplicas", 0) == want
            and st.get("replicas", 0) == want)


async def test_initialize_scale_promote_revert(kube, namespace):
    ns = namespace
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns))
    canary = await make_canary(kube, canary_body(ns, service={"portDiscovery": True}))
    owned = bool(canary.metadata.get("uid"))
    w = Workloads(kube)

    await w.initialize(canary, target)
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-primary"
    assert primary["spec"]["replicas"] == 2
    assert "kustomize.toolkit.fluxcd.io/checksum" not in (primary["metadata"].get("annotations") or {})
    rev = template_hash(target["spec"]["template"])
    assert primary["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION] == rev
    if owned:
        ref = primary["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Canary", "podinfo",
                                                                             canary.metadata["uid"], True)
    await until(lambda: _available(kube, ns, "podinfo-primary"), what="primary Available")

    svcs = {n: await kube.get("v1", "services", ns, n) for n in ("podinfo", "podinfo-primary", "podinfo-canary")}
    assert svcs["podinfo"]["spec"]["selector"] == {"app": "podinfo-primary"}
    assert svcs["podinfo-primary"]["spec"]["selector"] == {"app": "podinfo-primary"}
    assert svcs["podinfo-canary"]["spec"]["selector"] == {"app": "podinfo"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in svcs["podinfo"]["spec"]["ports"]] == \
        [("http", 9898, 9898), ("http-metrics", 9797, 9797)]
    assert svcs["podinfo-canary"]["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"] == "disabled"

    # idle: a second initialize reads but never writes
    before = dict(kube.requests)
    await w.initialize(canary, await kube.get("apps/v1", "deployments", ns, "podinfo"))
    writes = {v: kube.requests.get(v, 0) - before.get(v, 0) for v in ("create", "update", "patch", "delete")}
    assert writes == {"create": 0, "update": 0, "patch": 0, "delete": 0}

    # scale the target to zero and back
    target = await w.scale_target(canary, await kube.get("apps/v1", "deployments", ns, "podinfo"), up=False)
    stored = await kube.get("apps/v1", "deployments", ns, "podinfo")
    assert stored["spec"]["replicas"] == 0
    assert stored["metadata"]["annotations"][REPLICAS_ANNOTATION] == "2"
    await w.scale_target(canary, stored, up=True)
    stored = await kube.get("apps/v1", "deployments", ns, "podinfo")
    assert stored["spec"]["replicas"] == 2
    await until(lambda: _available(kube, ns, "podinfo"), what="target Available again")

    # a new revision in the target, promoted into the primary
    await kube.patch("apps/v1", "deployments", ns, "podinfo", {"spec": {"template": {"spec": {"containers": [
        {"name": "podinfod", "image": "ghcr.io/stefanprodan/podinfo:6.0.1",
         "ports": [{"name": "http", "containerPort": 9898}, {"name": "http-metrics", "containerPort": 9797}]}]}}}})
    target = await kube.get("apps/v1", "deployments", ns, "podinfo")
    rev2 = template_hash(target["spec"]["template"])
    assert rev2 != rev
    await w.promote(canary, target, rev2)
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["template"]["metadata"]["annotations"][REVISION_ANNOTATION] == rev2
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    await until(lambda: _available(kube, ns, "podinfo-primary"), what="promoted primary Available")
    before = kube.writes
    await w.promote(canary, target, rev2)
    assert kube.writes == before, "promoting the same revision twice must not write"

    # revertOnDeletion: the target serves again behind the apex Service, which survives the Canary
    await w.scale_target(canary, target, up=False)
    await w.revert(canary, await kube.get("apps/v1", "deployments", ns, "podinfo"))
    assert (await kube.get("apps/v1", "deployments", ns, "podinfo"))["spec"]["replicas"] == 2
    apex = await kube.get("v1", "services", ns, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    assert not apex["metadata"].get("ownerReferences")

    if owned:  # the owner references are valid: deleting the Canary collects what it owns
        await kube.delete("canary.dev/v1beta1", "canaries", ns, "podinfo", propagation="Background")
        # (the garbage collector of a controller-manager that has just started syncs its graph first)
        await until(lambda: _gone(kube, "apps/v1", "deployments", ns, "podinfo-primary"), 90, what="primary GC")
        await until(lambda: _gone(kube, "v1", "services", ns, "podinfo-canary"), 90, what="canary Service GC")
        assert await kube.get("v1", "services", ns, "podinfo") is not None


async def test_takeover_of_an_existing_apex_service(kube, namespace):
    ns = namespace
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns, replicas=1))
    existing = await kube.create("v1", "services", ns, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"team": "web"},
                     "annotations": {"owner": "team-web"}},
        "spec": {"type": "NodePort", "selector": {"app": "podinfo", "extra": "x"},
                 "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]},
    })
    node_port = existing["spec"]["ports"][0]["nodePort"]
    canary = await make_canary(kube, canary_body(ns))
    w = Workloads(kube)
    await w.initialize(canary, target)
    # the primary is not ready yet: the live Service still selects the target pods
    apex = await kube.get("v1", "services", ns, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo", "extra": "x"}
    await until(lambda: _available(kube, ns, "podinfo-primary"), what="primary Available")
    await w.initialize(canary, target)
    apex = await kube.get("v1", "services", ns, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}
    assert apex["spec"]["type"] == "NodePort"
    assert apex["spec"]["ports"][0]["nodePort"] == node_port
    assert apex["metadata"]["labels"] == {"team": "web"}
    original = apex["metadata"]["annotations"].pop("canary.dev/original-service")  # for revertOnDeletion
    assert apex["metadata"]["annotations"] == {"owner": "team-web"}
    assert '"extra":"x"' in original
    assert not apex["metadata"].get("ownerReferences")
    before = kube.writes
    await w.initialize(canary, target)
    assert kube.writes == before

    # revertOnDeletion gives the Service back as it was
    await until(lambda: _available(kube, ns, "podinfo"), what="target Available")
    result = await w.finalize(canary, await kube.get("apps/v1", "deployments", ns, "podinfo"))
    assert result.done  # the target was never scaled down here, so it is ready
    apex = await kube.get("v1", "services", ns, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo", "extra": "x"}
    assert apex["spec"]["ports"][0]["nodePort"] == node_port
    assert apex["metadata"]["annotations"] == {"owner": "team-web"}


async def test_api_errors_are_readable(kube, namespace):
    with pytest.raises(ApiError) as e:
        await kube.patch("apps/v1", "deployments", namespace, "missing", {"spec": {"replicas": 1}})
    assert e.value.status == 404
    assert str(e.value) == 'not found (404): deployments.apps "missing" not found'
    assert await kube.get("apps/v1", "deployments", namespace, "missing") is None
    assert await kube.delete("apps/v1", "deployments", namespace, "missing") is None
    assert await kube.preferred_version("apps") == "v1"
    assert await kube.served("apps", "v1") and not await kube.served("apps", "v9")
    assert await kube.preferred_version("no.such.group") is None
    assert any([await kube.served("autoscaling", "v2"), await kube.served("autoscaling", "v2beta2")])


async def _available(kube: Kube, ns: str, name: str) -> bool:
    return available(await kube.get("apps/v1", "deployments", ns, name))


async def _gone(kube: Kube, api_version: str, plural: str, ns: str, name: str) -> bool:
    return await kube.get(api_version, plural, ns, name) is None


async def test_promotion_reads_again_when_the_primary_spec_changed_since_it_was_read(kube, namespace):
    """The promotion patches the spec on the condition of the generation it read: the real API
    server refuses a stale one (422, a failed JSON patch `test`), and the promotion reads again
    instead of failing or overwriting the newer spec (the HPA's replicas, here)."""
    ns = namespace
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns))
    canary = await make_canary(kube, canary_body(ns, autoscalerRef={
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}))
    w = Workloads(kube)
    await w.initialize(canary, target)
    stale = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    await kube.patch("apps/v1", "deployments", ns, "podinfo-primary", {"spec": {"replicas": 3}})
    reads = []
    fresh = w._get_deployment

    async def first_read_stale(namespace_: str, name: str):
        reads.append(name)
        return stale if len(reads) == 1 else await fresh(namespace_, name)

    w._get_deployment = first_read_stale  # type: ignore[method-assign]
    new = deployment(ns, image="ghcr.io/stefanprodan/podinfo:6.0.1")
    await w.promote(canary, new, "r2")
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    assert len(reads) == 2
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["replicas"] == 3  # the newer spec's count, kept (autoscalerRef)
