"""Istio router: exact object shapes, schema round-trips (cloudcoil-models-istio) and the
write logic against an in-memory API (takeover, finalize, weights kept, idle = no writes)."""

from __future__ import annotations

import copy
import json

import pytest
from cloudcoil.models.istio.networking import v1 as istio_v1
from cloudcoil.models.istio.networking import v1alpha3 as istio_v1alpha3
from cloudcoil.models.istio.networking import v1beta1 as istio_v1beta1

from canary.adapters.workload import FLUX_DISABLED
from canary.models import Canary
from canary.routers import make_router
from canary.routers.base import Router, RouterError
from canary.routers.istio import (
    ORIGINAL_ANNOTATION,
    IstioRouter,
    build_destination_rules,
    build_virtual_service,
    read_routes,
)
from canary.types import Routes
from tests.unit.fakekube import FakeKube as _FakeKube

OWNER = {
    "apiVersion": "canary.dev/v1beta1",
    "kind": "Canary",
    "name": "podinfo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
PRIMARY = {"destination": {"host": "podinfo-primary"}, "weight": 100}
CANARY0 = {"destination": {"host": "podinfo-canary"}, "weight": 0}


def make_canary(service: dict | None = None, analysis: dict | None = None, uid: str | None = "uid-1") -> Canary:
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
            "analysis": analysis or {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10},
        },
    })


AB = {"interval": "1m", "threshold": 5, "iterations": 10,
      "match": [{"headers": {"x-canary": {"exact": "insider"}}},
                {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]}

SPECS = {
    "default": ({}, None, Routes()),
    "gateways-hosts": ({"gateways": ["public-gateway.istio-system.svc.cluster.local"],
                        "hosts": ["app.example.com"]}, None, Routes(90, 10)),
    "port-discovery-gateway": ({"portDiscovery": True, "gateways": ["public-gateway"],
                                "hosts": ["app.example.com"]}, None, Routes(70, 30)),
    "ab": ({"match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}}]}, AB, Routes(0, 100)),
    "mirror": ({}, {"interval": "1m", "threshold": 5, "stepWeight": 10, "mirror": True,
                    "mirrorWeight": 50}, Routes(100, 0, mirrored=True)),
    "tcp": ({"appProtocol": "tcp"}, None, Routes(60, 40)),
    "delegation": ({"delegation": True, "portDiscovery": True}, None, Routes(80, 20)),
    "options": ({
        "timeout": "30s",
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
        "rewrite": {"uri": "/", "authority": "podinfo.internal"},
        "headers": {"request": {"add": {"x-some-header": "value"}},
                    "response": {"set": {"x-frame-options": "DENY"}, "remove": ["x-powered-by"]}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["GET", "POST"],
                       "allowHeaders": ["x-requested-with"], "exposeHeaders": ["x-total"], "maxAge": "24h",
                       "allowCredentials": True},
        "match": [{"uri": {"prefix": "/"}, "method": {"exact": "GET"},
                   "queryParams": {"debug": {"exact": "1"}}, "ignoreUriCase": True}],
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
                          "loadBalancer": {"simple": "LEAST_REQUEST"},
                          "connectionPool": {"http": {"http1MaxPendingRequests": 10}},
                          "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}},
        "apex": {"labels": {"team": "a"}, "annotations": {"note": "apex"}},
    }, None, Routes(50, 50)),
}


# ---- exact shapes ----------------------------------------------------------------------------


def test_default_virtual_service_shape():
    vs = build_virtual_service(make_canary())
    assert vs == {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "podinfo", "namespace": "test", "annotations": FLUX_DISABLED,
                     "ownerReferences": [OWNER]},
        "spec": {"hosts": ["podinfo"], "gateways": ["mesh"], "http": [{"route": [PRIMARY, CANARY0]}]},
    }


def test_gateways_and_hosts():
    svc = SPECS["gateways-hosts"][0]
    spec = build_virtual_service(make_canary(svc), Routes(90, 10))["spec"]
    assert spec["hosts"] == ["app.example.com", "podinfo"]
    assert spec["gateways"] == ["public-gateway.istio-system.svc.cluster.local"]  # mesh not added
    assert spec["http"] == [{"route": [{"destination": {"host": "podinfo-primary"}, "weight": 90},
                                       {"destination": {"host": "podinfo-canary"}, "weight": 10}]}]
    # the apex name is not added twice, nor next to "*"
    assert build_virtual_service(make_canary({"hosts": ["podinfo", "x"]}))["spec"]["hosts"] == ["podinfo", "x"]
    assert build_virtual_service(make_canary({"hosts": ["*"]}))["spec"]["hosts"] == ["*"]


def test_port_discovery_sets_destination_port_only_behind_a_gateway():
    spec = build_virtual_service(make_canary(SPECS["port-discovery-gateway"][0]), Routes(70, 30))["spec"]
    assert spec["http"][0]["route"] == [
        {"destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 70},
        {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 30},
    ]
    mesh_only = build_virtual_service(make_canary({"portDiscovery": True}))["spec"]
    assert mesh_only["http"][0]["route"] == [PRIMARY, CANARY0]


def test_ab_match_merge():
    svc, analysis, routes = SPECS["ab"]
    spec = build_virtual_service(make_canary(svc, analysis), routes)["spec"]
    canary_route = [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                    {"destination": {"host": "podinfo-canary"}, "weight": 100}]
    header = {"x-canary": {"exact": "insider"}}
    cookie = {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}
    assert spec["http"] == [
        {"match": [{"uri": {"prefix": "/api"}, "headers": header},
                   {"uri": {"prefix": "/v2"}, "headers": header},
                   {"uri": {"prefix": "/api"}, "headers": cookie},
                   {"uri": {"prefix": "/v2"}, "headers": cookie}],
         "route": canary_route},
        {"match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}}],
         "route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]},
    ]
    # without service.match the A/B conditions are used as they are; the default rule has no match
    plain = build_virtual_service(make_canary({}, AB), Routes(0, 100))["spec"]["http"]
    assert plain[0]["match"] == [{"headers": header}, {"headers": cookie}]
    assert plain[1] == {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]}


def test_ab_merge_unites_header_maps():
    svc = {"match": [{"headers": {"x-region": {"exact": "eu"}}}]}
    analysis = {**AB, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    http = build_virtual_service(make_canary(svc, analysis))["spec"]["http"]
    assert http[0]["match"] == [{"headers": {"x-region": {"exact": "eu"}, "x-canary": {"exact": "insider"}}}]


def test_mirror():
    svc, analysis, routes = SPECS["mirror"]
    rule = build_virtual_service(make_canary(svc, analysis), routes)["spec"]["http"][0]
    assert rule == {"route": [PRIMARY, CANARY0], "mirror": {"host": "podinfo-canary"},
                    "mirrorPercentage": {"value": 50}}
    no_weight = make_canary({}, {"interval": "1m", "threshold": 5, "stepWeight": 10, "mirror": True})
    rule = build_virtual_service(no_weight, Routes(100, 0, mirrored=True))["spec"]["http"][0]
    assert rule == {"route": [PRIMARY, CANARY0], "mirror": {"host": "podinfo-canary"}}
    # not mirrored: no mirror fields even if the spec asks for mirroring
    assert "mirror" not in build_virtual_service(no_weight, Routes(90, 10))["spec"]["http"][0]


def test_tcp():
    spec = build_virtual_service(make_canary({"appProtocol": "tcp"}), Routes(60, 40))["spec"]
    assert "http" not in spec
    assert spec["tcp"] == [{
        "match": [{"port": 9898}],
        "route": [{"destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 60},
                  {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 40}],
    }]


def test_delegation():
    spec = build_virtual_service(make_canary({"delegation": True, "portDiscovery": True}), Routes(80, 20))["spec"]
    assert spec == {"http": [{"route": [
        {"destination": {"host": "podinfo-primary", "port": {"number": 9898}}, "weight": 80},
        {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 20}]}]}
    with pytest.raises(RouterError, match="delegation"):
        build_virtual_service(make_canary({"delegation": True, "hosts": ["a.example.com"]}))


def test_http_options_and_apex_metadata():
    vs = build_virtual_service(make_canary(SPECS["options"][0]), Routes(50, 50))
    assert vs["metadata"]["labels"] == {"team": "a"}
    assert vs["metadata"]["annotations"] == {"note": "apex", **FLUX_DISABLED}
    assert vs["spec"]["http"] == [{
        "match": [{"uri": {"prefix": "/"}, "method": {"exact": "GET"},
                   "queryParams": {"debug": {"exact": "1"}}, "ignoreUriCase": True}],
        "rewrite": {"uri": "/", "authority": "podinfo.internal"},
        "timeout": "30s",
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["GET", "POST"],
                       "allowHeaders": ["x-requested-with"], "exposeHeaders": ["x-total"], "maxAge": "24h",
                       "allowCredentials": True},
        "headers": {"request": {"add": {"x-some-header": "value"}},
                    "response": {"set": {"x-frame-options": "DENY"}, "remove": ["x-powered-by"]}},
        "route": [{"destination": {"host": "podinfo-primary"}, "weight": 50},
                  {"destination": {"host": "podinfo-canary"}, "weight": 50}],
    }]


def test_destination_rules():
    canary = make_canary(SPECS["options"][0])
    primary, canary_dr = build_destination_rules(canary)
    assert primary == {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "podinfo-primary", "namespace": "test", "annotations": FLUX_DISABLED,
                     "ownerReferences": [OWNER]},
        "spec": {"host": "podinfo-primary", "trafficPolicy": SPECS["options"][0]["trafficPolicy"]},
    }
    assert canary_dr["metadata"]["name"] == canary_dr["spec"]["host"] == "podinfo-canary"
    assert build_destination_rules(make_canary())[0]["spec"] == {"host": "podinfo-primary"}


def test_service_name_and_no_owner_without_uid():
    canary = make_canary({"name": "frontend"}, uid=None)
    vs = build_virtual_service(canary)
    assert vs["metadata"]["name"] == "frontend" and "ownerReferences" not in vs["metadata"]
    assert vs["spec"]["hosts"] == ["frontend"]
    assert [d["spec"]["host"] for d in build_destination_rules(canary)] == ["frontend-primary", "frontend-canary"]


@pytest.mark.parametrize("case", sorted(SPECS))
def test_read_routes_round_trip(case):
    svc, analysis, routes = SPECS[case]
    canary = make_canary(svc, analysis)
    assert read_routes(canary, build_virtual_service(canary, routes)) == routes


def test_read_routes_of_a_foreign_virtual_service():
    foreign = {"spec": {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}}
    assert read_routes(make_canary(), foreign) is None


# ---- schema round-trips through cloudcoil-models-istio ----------------------------------------

MODULES = {"networking.istio.io/v1beta1": istio_v1beta1, "networking.istio.io/v1": istio_v1,
           "networking.istio.io/v1alpha3": istio_v1alpha3}


def schema_round_trip(obj: dict) -> None:
    """Validate with the Istio models; the models ignore unknown fields, so the dump must give
    back exactly what went in (a misspelled or misplaced field disappears and fails here)."""
    module = MODULES[obj["apiVersion"]]
    model = getattr(module, obj["kind"])
    dumped = model.model_validate(obj).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert json.loads(json.dumps(dumped)) == obj, f"{obj['kind']} does not round-trip:\n{dumped}\n!=\n{obj}"


@pytest.mark.parametrize("api_version", sorted(MODULES))
@pytest.mark.parametrize("case", sorted(SPECS))
def test_objects_match_the_istio_schema(case, api_version):
    svc, analysis, routes = SPECS[case]
    canary = make_canary(svc, analysis)
    for obj in [build_virtual_service(canary, routes, api_version), *build_destination_rules(canary, api_version)]:
        schema_round_trip(obj)


@pytest.mark.parametrize("mutate", [
    lambda vs: vs["spec"]["http"][0].update(mirrorPercent={"value": 5}),  # a real field, wrong type
    lambda vs: vs["spec"]["http"][0].update(timeOut="5s"),
    lambda vs: vs["spec"]["http"][0]["route"][0]["destination"].update(hostname="x"),
    lambda vs: vs["spec"].update(gateway=["mesh"]),
])
def test_schema_check_catches_a_misspelled_field(mutate):
    vs = build_virtual_service(make_canary())
    mutate(vs)
    with pytest.raises((AssertionError, ValueError)):
        schema_round_trip(vs)


# ---- write logic against an in-memory API ------------------------------------------------------


class FakeKube(_FakeKube):
    def __init__(self, served=("v1beta1", "v1")):
        super().__init__(served)


async def test_router_lifecycle_in_memory():
    kube = FakeKube()
    router = IstioRouter(kube)
    assert isinstance(router, Router)
    canary = make_canary()
    assert await router.get_routes(canary) is None
    await router.reconcile(canary)
    assert kube.requests["create"] == 3
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.set_routes(canary, Routes(80, 20))
    assert await router.get_routes(canary) == Routes(80, 20)
    writes = kube.writes
    await router.reconcile(canary)  # keeps the weights, and writes nothing
    await router.set_routes(canary, Routes(80, 20))
    assert kube.writes == writes
    assert await router.get_routes(canary) == Routes(80, 20)
    # a spec change is applied by reconcile, weights still kept
    changed = make_canary({"timeout": "5s"})
    await router.reconcile(changed)
    rule = kube.objects[("virtualservices", "test", "podinfo")]["spec"]["http"][0]
    assert rule["timeout"] == "5s" and read_routes(changed, {"spec": {"http": [rule]}}) == Routes(80, 20)
    # finalize leaves our own objects alone (garbage collection removes them)
    before = copy.deepcopy(kube.objects)
    await router.finalize(canary)
    assert kube.objects == before


async def test_takeover_and_finalize_in_memory():
    kube = FakeKube()
    original = {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}], "timeout": "9s"}]}
    kube.objects[("virtualservices", "test", "podinfo")] = {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "1",
                     "annotations": {"owner": "team-a"}, "labels": {"app": "podinfo"}},
        "spec": copy.deepcopy(original),
    }
    router = IstioRouter(kube)
    canary = make_canary()
    assert await router.get_routes(canary) is None  # not ours yet
    await router.reconcile(canary)
    vs = kube.objects[("virtualservices", "test", "podinfo")]
    assert json.loads(vs["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original
    assert vs["metadata"]["annotations"]["owner"] == "team-a"
    assert "ownerReferences" not in vs["metadata"]  # still the user's object
    assert vs["spec"] == build_virtual_service(canary)["spec"]
    await router.set_routes(canary, Routes(60, 40))
    await router.reconcile(canary)
    vs = kube.objects[("virtualservices", "test", "podinfo")]
    assert json.loads(vs["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original  # not overwritten
    assert await router.get_routes(canary) == Routes(60, 40)
    await router.finalize(canary)
    vs = kube.objects[("virtualservices", "test", "podinfo")]
    assert vs["spec"] == original
    assert vs["metadata"]["annotations"] == {"owner": "team-a"}
    assert vs["metadata"]["labels"] == {"app": "podinfo"}


async def test_api_version_discovery():
    assert await IstioRouter(FakeKube(served=("v1",))).api_version() == "networking.istio.io/v1"
    assert await IstioRouter(FakeKube(served=("v1alpha3", "v1beta1"))).api_version() == \
        "networking.istio.io/v1beta1"
    with pytest.raises(RouterError, match="networking.istio.io"):
        await IstioRouter(FakeKube(served=())).api_version()


def test_make_router():
    assert isinstance(make_router("istio", FakeKube()), IstioRouter)
    assert isinstance(make_router(None, FakeKube()), IstioRouter)
    with pytest.raises(RouterError, match="not supported"):
        make_router("linkerd", FakeKube())
