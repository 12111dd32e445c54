"""Istio router against the real API server of the testbed (Istio CRDs installed)."""

from __future__ import annotations

import copy
import json

import pytest

from canary.adapters.kube import Kube
from canary.models import Canary
from canary.routers import make_router
from canary.routers.istio import ORIGINAL_ANNOTATION, IstioRouter, build_virtual_service
from canary.types import Routes

pytestmark = pytest.mark.testbed


def canary_body(ns: str, name: str = "podinfo", service: dict | None = None, analysis: dict | None = None) -> dict:
    return {
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, **(service or {})},
            "analysis": analysis or {"interval": "10s", "threshold": 2, "stepWeight": 20,
                                     "mirror": True, "mirrorWeight": 30},
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
        "gateways": ["mesh", "istio-system/public-gateway"], "hosts": ["app.example.com"],
        "portDiscovery": True, "timeout": "15s", "retries": {"attempts": 2, "perTryTimeout": "3s"},
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
    }))
    router = make_router("istio", kube)
    assert isinstance(router, IstioRouter)
    version = await router.api_version()
    assert version == "networking.istio.io/v1beta1"  # preferred by us even where v1 is the server's preference
    assert await router.get_routes(canary) is None

    await router.reconcile(canary)
    vs = await kube.get(version, "virtualservices", ns, "podinfo")
    assert vs["spec"] == build_virtual_service(canary)["spec"]
    assert vs["spec"]["hosts"] == ["app.example.com", "podinfo"]
    assert vs["spec"]["http"][0]["route"][0] == {
        "destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 100}
    for name in ("podinfo-primary", "podinfo-canary"):
        dr = await kube.get(version, "destinationrules", ns, name)
        assert dr["spec"] == {"host": name, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
        if canary.metadata.get("uid"):
            assert dr["metadata"]["ownerReferences"][0]["uid"] == canary.metadata["uid"]
    assert await router.get_routes(canary) == Routes(100, 0)

    await router.set_routes(canary, Routes(80, 20))
    assert await router.get_routes(canary) == Routes(80, 20)
    # the stored object (read in another version) has the weights too
    other = await kube.get("networking.istio.io/v1", "virtualservices", ns, "podinfo")
    assert [r["weight"] for r in other["spec"]["http"][0]["route"]] == [80, 20]

    before = kube.writes
    await router.reconcile(canary)  # never touches the weights; nothing changed, so no write
    await router.set_routes(canary, Routes(80, 20))
    assert kube.writes == before
    assert await router.get_routes(canary) == Routes(80, 20)

    # a spec change is applied, the weights stay
    changed = Canary.from_obj({**canary.model_dump(by_alias=True, exclude_none=True),
                               "spec": {**canary.spec.dump(), "service": {**canary.spec.service.dump(),
                                                                          "timeout": "20s"}}})
    await router.reconcile(changed)
    vs = await kube.get(version, "virtualservices", ns, "podinfo")
    assert vs["spec"]["http"][0]["timeout"] == "20s"
    assert await router.get_routes(canary) == Routes(80, 20)

    # mirroring
    await router.set_routes(canary, Routes(100, 0, mirrored=True))
    assert await router.get_routes(canary) == Routes(100, 0, mirrored=True)
    rule = (await kube.get(version, "virtualservices", ns, "podinfo"))["spec"]["http"][0]
    assert rule["mirror"] == {"host": "podinfo-canary"} and rule["mirrorPercentage"] == {"value": 30}
    await router.set_routes(canary, Routes(100, 0))
    assert "mirror" not in (await kube.get(version, "virtualservices", ns, "podinfo"))["spec"]["http"][0]


async def test_takeover_and_finalize(kube, namespace):
    ns = namespace
    version = "networking.istio.io/v1beta1"
    original_spec = {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}],
                                                     "timeout": "7s"}]}
    await kube.create(version, "virtualservices", ns, {
        "apiVersion": version, "kind": "VirtualService",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": {"team": "web"},
                     "annotations": {"owner": "team-web"}},
        "spec": copy.deepcopy(original_spec),
    })
    canary = await make_canary(kube, canary_body(ns))
    router = IstioRouter(kube)
    assert await router.get_routes(canary) is None  # foreign: no primary/canary route yet

    await router.reconcile(canary)
    vs = await kube.get(version, "virtualservices", ns, "podinfo")
    assert json.loads(vs["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original_spec
    assert vs["metadata"]["annotations"]["owner"] == "team-web"
    assert vs["spec"] == build_virtual_service(canary)["spec"]
    assert not vs["metadata"].get("ownerReferences")
    await router.set_routes(canary, Routes(70, 30))
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(70, 30)
    vs = await kube.get(version, "virtualservices", ns, "podinfo")
    assert json.loads(vs["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original_spec

    await router.finalize(canary)
    vs = await kube.get(version, "virtualservices", ns, "podinfo")
    assert vs["spec"] == original_spec
    assert vs["metadata"]["annotations"] == {"owner": "team-web"}
    assert vs["metadata"]["labels"] == {"team": "web"}
    # our own DestinationRules are left to garbage collection
    assert await kube.get(version, "destinationrules", ns, "podinfo-primary") is not None
    before = kube.writes
    await router.finalize(canary)
    assert kube.writes == before
