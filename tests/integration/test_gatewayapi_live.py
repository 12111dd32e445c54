"""Gateway API router against the real API server of the testbed (Gateway API CRDs installed)."""

from __future__ import annotations

import copy
import json

import pytest

from canary.adapters.kube import Kube
from canary.models import Canary
from canary.routers import make_router
from canary.routers.gatewayapi import ORIGINAL_ANNOTATION, GatewayAPIRouter, build_httproute
from canary.types import Routes

pytestmark = pytest.mark.testbed

V1 = "gateway.networking.k8s.io/v1"
V1BETA1 = "gateway.networking.k8s.io/v1beta1"


def canary_body(ns: str, name: str = "podinfo", service: dict | None = None, analysis: dict | None = None) -> dict:
    return {
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "provider": "gatewayapi:v1",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway", "namespace": ns, "sectionName": "http"}],
                        **(service or {})},
            "analysis": analysis or {"interval": "10s", "threshold": 2, "iterations": 3, "mirror": True},
        },
    }


async def make_canary(kube: Kube, body: dict) -> Canary:
    if await kube.served("canary.dev", "v1beta1"):
        return Canary.from_obj(await kube.create("canary.dev/v1beta1", "canaries",
                                                 body["metadata"]["namespace"], body))
    return Canary.from_obj(body)  # CRD not installed: owner-less objects


@pytest.fixture
async def kube(testbed):
    k = Kube.from_config(testbed.get("operator_kubeconfig") or testbed["kubeconfig"])
    yield k
    await k.aclose()


async def test_reconcile_set_get_routes(kube, namespace):
    ns = namespace
    canary = await make_canary(kube, canary_body(ns, service={
        "hosts": ["www.example.com"], "timeout": "15s", "backendTimeout": "5s",
        "headers": {"request": {"set": {"x-origin": "canary"}}},
        "match": [{"uri": {"prefix": "/"}, "headers": {"x-tenant": {"regex": "a|b"}}}],
    }))
    router = make_router("gatewayapi:v1", kube)
    assert isinstance(router, GatewayAPIRouter)
    assert await router.api_version() == V1
    assert await router.get_routes(canary) is None

    await router.reconcile(canary)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert route["spec"] == build_httproute(canary)["spec"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "namespace": ns, "name": "gateway", "sectionName": "http"}]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "15s", "backendRequest": "5s"}
    if canary.metadata.get("uid"):
        assert route["metadata"]["ownerReferences"][0]["uid"] == canary.metadata["uid"]
    assert await router.get_routes(canary) == Routes(100, 0)

    await router.set_routes(canary, Routes(70, 30))
    assert await router.get_routes(canary) == Routes(70, 30)
    # the same object read through v1beta1 has the weights too
    other = await kube.get(V1BETA1, "httproutes", ns, "podinfo")
    assert [b["weight"] for b in other["spec"]["rules"][0]["backendRefs"]] == [70, 30]

    before = kube.writes
    await router.reconcile(canary)  # never touches the weights; nothing changed, so no write
    await router.set_routes(canary, Routes(70, 30))
    assert kube.writes == before
    assert await router.get_routes(canary) == Routes(70, 30)

    # a spec change is applied, the weights stay
    changed = Canary.from_obj({**canary.model_dump(by_alias=True, exclude_none=True),
                               "spec": {**canary.spec.dump(), "service": {**canary.spec.service.dump(),
                                                                          "timeout": "20s"}}})
    await router.reconcile(changed)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert route["spec"]["rules"][0]["timeouts"]["request"] == "20s"
    assert await router.get_routes(canary) == Routes(70, 30)

    # blue/green mirroring is reported truthfully
    await router.set_routes(changed, Routes(100, 0, mirrored=True))
    assert await router.get_routes(changed) == Routes(100, 0, mirrored=True)
    filters = (await kube.get(V1, "httproutes", ns, "podinfo"))["spec"]["rules"][0]["filters"]
    assert filters[-1]["requestMirror"]["backendRef"]["name"] == "podinfo-canary"
    await router.set_routes(changed, Routes(0, 100))
    assert await router.get_routes(changed) == Routes(0, 100)

    # a v1beta1 router drives the same object, without v1-only fields
    beta = make_router("gatewayapi:v1beta1", kube)
    assert await beta.api_version() == V1BETA1
    assert await beta.get_routes(changed) == Routes(0, 100)
    await beta.reconcile(changed)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert "timeouts" not in route["spec"]["rules"][0]
    assert await beta.get_routes(changed) == Routes(0, 100)


async def test_accepted_status(kube, namespace):
    ns = namespace
    canary = await make_canary(kube, canary_body(ns))
    router = GatewayAPIRouter(kube)
    await router.reconcile(canary)
    assert await router.status_problem(canary) is None  # nobody reports on it: accepted
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    generation = route["metadata"]["generation"]
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": ns, "name": "gateway",
           "sectionName": "http"}

    async def report(status: str, observed: int, reason: str) -> None:
        await kube.patch(V1, "httproutes", ns, "podinfo", {"status": {"parents": [{
            "parentRef": ref, "controllerName": "example.com/gateway-controller",
            "conditions": [{"type": "Accepted", "status": status, "observedGeneration": observed,
                            "reason": reason, "message": f"{reason} for test",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}}, subresource="status")

    await report("False", generation, "NoMatchingParent")
    problem = await router.status_problem(canary)
    assert problem and "NoMatchingParent" in problem and "gateway" in problem
    assert await router.get_routes(canary) == Routes(100, 0)  # weights still reported
    await report("True", generation, "Accepted")
    assert await router.status_problem(canary) is None
    await router.set_routes(canary, Routes(90, 10))  # a new generation the parent has not seen yet
    problem = await router.status_problem(canary)
    assert problem and f"generation {generation + 1}" in problem


async def test_takeover_and_finalize(kube, namespace):
    ns = namespace
    original_spec = {"parentRefs": [{"name": "gateway"}], "hostnames": ["app.example.com"],
                     "rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}]}
    await kube.create(V1, "httproutes", ns, {
        "apiVersion": V1, "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"team": "web"},
                     "annotations": {"owner": "team-web"}},
        "spec": copy.deepcopy(original_spec),
    })
    canary = await make_canary(kube, canary_body(ns))
    router = GatewayAPIRouter(kube)
    assert await router.get_routes(canary) is None  # foreign: no primary/canary rule yet

    await router.reconcile(canary)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert json.loads(route["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original_spec
    assert route["metadata"]["annotations"]["owner"] == "team-web"
    assert route["spec"] == build_httproute(canary)["spec"]
    assert not route["metadata"].get("ownerReferences")
    await router.set_routes(canary, Routes(70, 30))
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(70, 30)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert json.loads(route["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original_spec

    await router.finalize(canary)
    route = await kube.get(V1, "httproutes", ns, "podinfo")
    assert route["spec"] == original_spec
    assert route["metadata"]["annotations"] == {"owner": "team-web"}
    assert route["metadata"]["labels"] == {"team": "web"}
    before = kube.writes
    await router.finalize(canary)
    assert kube.writes == before
