"""Gateway API router: exact HTTPRoute shapes (v1 and v1beta1), a field check written from the
Gateway API reference, read_routes, Accepted status, and the write logic against an in-memory
API (takeover, finalize, weights kept, idle = no writes, version discovery)."""

from __future__ import annotations

import copy
import json

import pytest

from canary.adapters.workload import FLUX_DISABLED
from canary.models import Canary
from canary.routers import make_router
from canary.routers.affinity import cookie_regex, cookie_value
from canary.routers.base import Router, RouterError
from canary.routers.gatewayapi import (
    ORIGINAL_ANNOTATION,
    GatewayAPIRouter,
    build_httproute,
    map_match,
    read_routes,
    route_status_problem,
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
GATEWAY = {"name": "gateway", "namespace": "istio-ingress"}
PARENT = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "istio-ingress", "name": "gateway"}
SLASH = {"path": {"type": "PathPrefix", "value": "/"}}


def backend(name: str, weight: int | None, **extra) -> dict:
    out = {"group": "", "kind": "Service", "name": name, "port": 9898, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def make_canary(service: dict | None = None, analysis: dict | None = None, uid: str | None = "uid-1",
                status: dict | None = None, gateway_refs: list | None = None) -> Canary:
    meta = {"name": "podinfo", "namespace": "test"}
    if uid:
        meta["uid"] = uid
    obj = {
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": meta,
        "spec": {
            "provider": "gatewayapi:v1",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": gateway_refs if gateway_refs is not None else [GATEWAY],
                        **(service or {})},
            "analysis": analysis or {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10},
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.from_obj(obj)


AB = {"interval": "1m", "threshold": 5, "iterations": 10,
      "match": [{"headers": {"x-canary": {"exact": "insider"}}},
                {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]}
BG_MIRROR = {"interval": "1m", "threshold": 5, "iterations": 5, "mirror": True}
AFFINITY = {"interval": "30s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
            "sessionAffinity": {"cookieName": "canary-cookie", "maxAge": 3600}}
AFFINITY_PRIMARY = {**AFFINITY, "sessionAffinity": {
    "cookieName": "canary-cookie", "primaryCookieName": "primary-cookie", "maxAge": 21600, "path": "/",
    "domain": "example.com", "httpOnly": True, "secure": True, "sameSite": "Lax", "partitioned": True}}
RUNNING = {"phase": "Progressing", "lastAppliedSpec": "rev-2"}

OPTIONS = {
    "hosts": ["www.example.com", "app.example.com"],
    "timeout": "30s",
    "backendTimeout": "10s",
    "headers": {"request": {"set": {"x-origin": "canary"}, "add": {"x-extra": "1"}, "remove": ["x-drop"]},
                "response": {"set": {"x-frame-options": "DENY"}}},
    "rewrite": {"uri": "/v2", "authority": "podinfo.internal"},
    "mirror": [{"backendRef": {"name": "podinfo-shadow", "port": 9898}}],
    "corsPolicy": {"allowOrigin": ["https://a.example.com"], "allowOrigins": [{"exact": "https://b.example.com"},
                                                                             {"prefix": "https://c"}],
                   "allowMethods": ["GET"], "allowHeaders": ["x-requested-with"], "exposeHeaders": ["x-total"],
                   "maxAge": "24h", "allowCredentials": True},
    "match": [{"uri": {"prefix": "/api"}, "method": {"exact": "get"},
               "headers": {"x-tenant": {"exact": "a"}, "x-version": {"regex": "v[0-9]+"}},
               "queryParams": {"debug": {"exact": "1"}, "q": {"regex": ".*"}}},
              {"uri": {"exact": "/healthz"}}, {"uri": {"regex": "/items/[0-9]+"}}],
    "apex": {"labels": {"team": "a"}, "annotations": {"note": "apex"}},
}

# case -> (service, analysis, status, routes)
SPECS = {
    "default": ({}, None, None, Routes()),
    "weights": ({"hosts": ["www.example.com"]}, None, None, Routes(90, 10)),
    "options": (OPTIONS, None, None, Routes(70, 30)),
    "ab": ({"match": [{"uri": {"prefix": "/api"}}]}, AB, None, Routes(0, 100)),
    "bg-mirror": ({}, BG_MIRROR, None, Routes(100, 0, mirrored=True)),
    "bg-switch": ({}, BG_MIRROR, None, Routes(0, 100)),
    "affinity": ({}, AFFINITY, RUNNING, Routes(80, 20)),
    "affinity-primary": ({"match": [{"uri": {"prefix": "/"}}, {"uri": {"prefix": "/api"}}]}, AFFINITY_PRIMARY,
                         RUNNING, Routes(60, 40)),
    "affinity-expire": ({}, AFFINITY, {"phase": "Succeeded", "lastAppliedSpec": "rev-2"}, Routes()),
}


def build(case: str, version: str = "v1") -> tuple[Canary, dict]:
    svc, analysis, status, routes = SPECS[case]
    canary = make_canary(svc, analysis, status=status)
    return canary, build_httproute(canary, routes, version)


# ---- exact shapes ----------------------------------------------------------------------------


def test_default_httproute_shape():
    assert build_httproute(make_canary()) == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "test", "annotations": FLUX_DISABLED,
                     "ownerReferences": [OWNER]},
        "spec": {
            "parentRefs": [PARENT],
            "rules": [{"matches": [SLASH],
                       "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)]}],
        },
    }
    assert build_httproute(make_canary(), version="v1beta1")["apiVersion"] == "gateway.networking.k8s.io/v1beta1"


def test_gateway_refs_and_hosts():
    refs = [{"name": "public", "namespace": "ingress", "sectionName": "https"},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal", "port": 8080},
            {"group": "example.com", "kind": "Mesh", "name": "mesh"}]
    spec = build_httproute(make_canary({"hosts": ["www.example.com"]}, gateway_refs=refs), Routes(90, 10))["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ingress", "name": "public",
         "sectionName": "https"},
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal", "port": 8080},
        {"group": "example.com", "kind": "Mesh", "name": "mesh"},
    ]
    assert spec["hostnames"] == ["www.example.com"]
    assert spec["rules"][0]["backendRefs"] == [backend("podinfo-primary", 90), backend("podinfo-canary", 10)]
    assert "hostnames" not in build_httproute(make_canary())["spec"]


def test_gateway_refs_are_required():
    with pytest.raises(RouterError, match="gatewayRefs"):
        build_httproute(make_canary(gateway_refs=[]))
    no_service = make_canary()
    no_service.spec.service = None
    with pytest.raises(RouterError, match="spec.service"):
        build_httproute(no_service)


def test_service_name_and_no_owner_without_uid():
    route = build_httproute(make_canary({"name": "frontend"}, uid=None))
    assert route["metadata"]["name"] == "frontend" and "ownerReferences" not in route["metadata"]
    assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == ["frontend-primary", "frontend-canary"]


def test_matches_filters_timeouts_on_v1():
    canary, route = build("options")
    assert route["metadata"]["labels"] == {"team": "a"}
    assert route["metadata"]["annotations"] == {"note": "apex", **FLUX_DISABLED}
    assert route["spec"]["hostnames"] == ["www.example.com", "app.example.com"]
    assert route["spec"]["rules"] == [{
        "matches": [
            {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
             "headers": [{"name": "x-tenant", "type": "Exact", "value": "a"},
                         {"name": "x-version", "type": "RegularExpression", "value": "v[0-9]+"}],
             "queryParams": [{"name": "debug", "type": "Exact", "value": "1"},
                             {"name": "q", "type": "RegularExpression", "value": ".*"}]},
            {"path": {"type": "Exact", "value": "/healthz"}},
            {"path": {"type": "RegularExpression", "value": "/items/[0-9]+"}},
        ],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "x-origin", "value": "canary"}], "add": [{"name": "x-extra", "value": "1"}],
                "remove": ["x-drop"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "set": [{"name": "x-frame-options", "value": "DENY"}]}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "podinfo.internal",
                                                  "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2"}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {
                "group": "", "kind": "Service", "name": "podinfo-shadow", "port": 9898}}},
            {"type": "CORS", "cors": {"allowOrigins": ["https://a.example.com", "https://b.example.com"],
                                      "allowCredentials": True, "allowMethods": ["GET"],
                                      "allowHeaders": ["x-requested-with"], "exposeHeaders": ["x-total"],
                                      "maxAge": 86400}},
        ],
        "timeouts": {"request": "30s", "backendRequest": "10s"},
        "backendRefs": [backend("podinfo-primary", 70), backend("podinfo-canary", 30)],
    }]


def test_v1beta1_has_no_timeouts_and_no_cors():
    _, v1 = build("options", "v1")
    _, beta = build("options", "v1beta1")
    rule = beta["spec"]["rules"][0]
    assert "timeouts" not in rule
    assert [f["type"] for f in rule["filters"]] == ["RequestHeaderModifier", "ResponseHeaderModifier",
                                                    "URLRewrite", "RequestMirror"]
    # everything else is the same
    v1_rule = copy.deepcopy(v1["spec"]["rules"][0])
    del v1_rule["timeouts"]
    v1_rule["filters"] = v1_rule["filters"][:-1]
    assert rule == v1_rule


def test_rewrite_prefix_and_cors_default_max_age():
    canary = make_canary({"rewrite": {"uri": "/", "type": "ReplacePrefixMatch"},
                          "corsPolicy": {"allowOrigin": ["*"]}})
    filters = build_httproute(canary)["spec"]["rules"][0]["filters"]
    assert filters == [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
        {"type": "CORS", "cors": {"allowOrigins": ["*"], "maxAge": 5}},
    ]


@pytest.mark.parametrize("match, field", [
    ({"uri": {"suffix": ".css"}}, "spec.service.match[0].uri"),
    ({"method": {"regex": "GET|POST"}}, "spec.service.match[0].method"),
    ({"headers": {"x-a": {"prefix": "b"}}}, "spec.service.match[0].headers.x-a"),
    ({"queryParams": {"v": {"suffix": "b"}}}, "spec.service.match[0].queryParams.v"),
    ({"scheme": {"exact": "https"}}, "spec.service.match[0].scheme"),
    ({"authority": {"exact": "a"}}, "spec.service.match[0].authority"),
    ({"withoutHeaders": {"x-a": {"exact": "b"}}}, "spec.service.match[0].withoutHeaders"),
    ({"sourceLabels": {"app": "x"}}, "spec.service.match[0].sourceLabels"),
    ({"port": 8080}, "spec.service.match[0].port"),
    ({"ignoreUriCase": True}, "spec.service.match[0].ignoreUriCase"),
])
def test_unsupported_match_fields_name_the_field(match, field):
    with pytest.raises(RouterError) as err:
        build_httproute(make_canary({"match": [match]}))
    assert field in str(err.value)


def test_unsupported_ab_match_names_the_analysis_field():
    analysis = {**AB, "match": [{"headers": {"x-canary": {"exact": "insider"}}}, {"sourceLabels": {"app": "x"}}]}
    with pytest.raises(RouterError, match=r"spec\.analysis\.match\[1\]\.sourceLabels"):
        build_httproute(make_canary({}, analysis))


def test_map_match_ignores_name_and_false_ignore_uri_case():
    assert map_match({"name": "api", "ignoreUriCase": False, "uri": {"prefix": "/a"}}, "m") == {
        "path": {"type": "PathPrefix", "value": "/a"}}
    assert map_match({"headers": {"x": {"exact": "1"}}}, "m") == {
        **SLASH, "headers": [{"name": "x", "type": "Exact", "value": "1"}]}


def test_ab_rules():
    _, route = build("ab")
    header = [{"name": "x-canary", "type": "Exact", "value": "insider"}]
    cookie = [{"name": "cookie", "type": "RegularExpression", "value": "^(.*?;)?(canary=always)(;.*)?$"}]
    api = {"type": "PathPrefix", "value": "/api"}
    assert route["spec"]["rules"] == [
        {"matches": [{"path": api, "headers": header}, {"path": api, "headers": cookie}],
         "backendRefs": [backend("podinfo-primary", 0), backend("podinfo-canary", 100)]},
        {"matches": [{"path": api}], "backendRefs": [backend("podinfo-primary", 100)]},
    ]
    # without service.match: the A/B matches alone, and the default rule matches "/"
    rules = build_httproute(make_canary({}, AB), Routes(0, 100))["spec"]["rules"]
    assert rules[0]["matches"] == [{**SLASH, "headers": header}, {**SLASH, "headers": cookie}]
    assert rules[1] == {"matches": [SLASH], "backendRefs": [backend("podinfo-primary", 100)]}


def test_ab_merges_headers_and_query_params_with_the_service_match():
    svc = {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-region": {"exact": "eu"}},
                      "queryParams": {"a": {"exact": "1"}}}]}
    analysis = {**AB, "match": [{"headers": {"x-canary": {"exact": "insider"}}, "queryParams": {"b": {"exact": "2"}}}]}
    rules = build_httproute(make_canary(svc, analysis))["spec"]["rules"]
    assert rules[0]["matches"] == [{
        "path": {"type": "PathPrefix", "value": "/api"},
        "headers": [{"name": "x-region", "type": "Exact", "value": "eu"},
                    {"name": "x-canary", "type": "Exact", "value": "insider"}],
        "queryParams": [{"name": "a", "type": "Exact", "value": "1"}, {"name": "b", "type": "Exact", "value": "2"}],
    }]


def test_mirror_filter_while_mirrored():
    canary, route = build("bg-mirror")
    assert route["spec"]["rules"] == [{
        "matches": [SLASH],
        "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": backend("podinfo-canary", None)}}],
        "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)],
    }]
    assert read_routes(canary, route) == Routes(100, 0, mirrored=True)
    # the mirror goes after the static filters, and only while mirrored
    with_static = make_canary({"mirror": [{"backendRef": {"name": "shadow", "port": 80}}]}, BG_MIRROR)
    filters = build_httproute(with_static, Routes(100, 0, mirrored=True))["spec"]["rules"][0]["filters"]
    assert [f["requestMirror"]["backendRef"]["name"] for f in filters] == ["shadow", "podinfo-canary"]
    static_only = build_httproute(with_static, Routes(100, 0))
    assert read_routes(with_static, static_only) == Routes(100, 0)  # a static mirror is not mirroring
    # mirrorWeight becomes the percent on v1 only
    weighted = make_canary({}, {**BG_MIRROR, "mirrorWeight": 25})
    mirror = build_httproute(weighted, Routes(100, 0, True))["spec"]["rules"][0]["filters"][0]["requestMirror"]
    assert mirror["percent"] == 25
    mirror = build_httproute(weighted, Routes(100, 0, True), "v1beta1")["spec"]["rules"][0]["filters"][0]
    assert "percent" not in mirror["requestMirror"]


# ---- session affinity ------------------------------------------------------------------------


def test_session_affinity_rules():
    canary, route = build("affinity")
    value = cookie_value("uid-1", "rev-2", "canary")
    assert len(value) == 10 and value.isalpha() and value.islower()
    cookie = f"canary-cookie={value}"
    assert route["spec"]["rules"] == [
        {"matches": [{**SLASH, "headers": [{"name": "Cookie", "type": "RegularExpression",
                                            "value": cookie_regex(cookie)}]}],
         "backendRefs": [backend("podinfo-canary", 100)]},
        {"matches": [SLASH],
         "backendRefs": [backend("podinfo-primary", 80), backend("podinfo-canary", 20, filters=[
             {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                 "add": [{"name": "Set-Cookie", "value": f"{cookie}; Max-Age=3600"}]}}])]},
    ]
    assert read_routes(canary, route) == Routes(80, 20)  # the sticky rule is not the weighted one


def test_session_affinity_with_primary_cookie_and_attributes():
    canary, route = build("affinity-primary")
    canary_cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    primary_cookie = f"primary-cookie={cookie_value('uid-1', 'rev-2', 'primary')}"
    attrs = "Domain=example.com; Path=/; HttpOnly; Secure; SameSite=Lax; Partitioned"
    rules = route["spec"]["rules"]
    assert len(rules) == 3
    sticky_canary, sticky_primary, weighted = rules
    paths = [{"type": "PathPrefix", "value": "/"}, {"type": "PathPrefix", "value": "/api"}]
    for rule, cookie, name in ((sticky_canary, canary_cookie, "podinfo-canary"),
                               (sticky_primary, primary_cookie, "podinfo-primary")):
        assert rule["matches"] == [{"path": p, "headers": [{"name": "Cookie", "type": "RegularExpression",
                                                            "value": cookie_regex(cookie)}]} for p in paths]
        assert rule["backendRefs"] == [backend(name, 100)]
    primary_b, canary_b = weighted["backendRefs"]
    assert primary_b["filters"][0]["responseHeaderModifier"]["add"] == [
        {"name": "Set-Cookie", "value": f"{primary_cookie}; Max-Age=30; {attrs}"}]  # Max-Age = the interval
    assert canary_b["filters"][0]["responseHeaderModifier"]["add"] == [
        {"name": "Set-Cookie", "value": f"{canary_cookie}; Max-Age=21600; {attrs}"}]
    assert read_routes(canary, route) == Routes(60, 40)


def test_session_affinity_cookie_is_deterministic_per_run():
    a = build_httproute(make_canary({}, AFFINITY, status=RUNNING), Routes(90, 10))
    b = build_httproute(make_canary({}, AFFINITY, status=RUNNING), Routes(70, 30))
    assert a["spec"]["rules"][0] == b["spec"]["rules"][0]  # same run: same cookie whatever the weight
    other_run = build_httproute(make_canary({}, AFFINITY, status={**RUNNING, "lastAppliedSpec": "rev-3"}),
                                Routes(90, 10))
    other_canary = build_httproute(make_canary({}, AFFINITY, status=RUNNING, uid="uid-2"), Routes(90, 10))
    assert other_run["spec"]["rules"][0] != a["spec"]["rules"][0]
    assert other_canary["spec"]["rules"][0] != a["spec"]["rules"][0]


def test_session_affinity_cookie_from_status_wins():
    status = {**RUNNING, "sessionAffinityCookie": "canary-cookie=recorded"}
    rules = build_httproute(make_canary({}, AFFINITY, status=status), Routes(90, 10))["spec"]["rules"]
    assert rules[0]["matches"][0]["headers"][0]["value"] == cookie_regex("canary-cookie=recorded")


def test_session_affinity_expires_the_last_cookie_after_a_run():
    canary, route = build("affinity-expire")
    cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    assert route["spec"]["rules"] == [
        {"matches": [{**SLASH, "headers": [{"name": "Cookie", "type": "RegularExpression",
                                            "value": cookie_regex(cookie)}]}],
         "backendRefs": [backend("podinfo-primary", 100, filters=[
             {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                 "add": [{"name": "Set-Cookie", "value": f"{cookie}; Max-Age=-1"}]}}])]},
        {"matches": [SLASH], "backendRefs": [backend("podinfo-primary", 100), backend("podinfo-canary", 0)]},
    ]
    assert read_routes(canary, route) == Routes(100, 0)
    # nothing ran yet: no cookie rule at all
    for status in (None, {"phase": "Initialized", "lastAppliedSpec": "rev-1"}):
        rules = build_httproute(make_canary({}, AFFINITY, status=status))["spec"]["rules"]
        assert len(rules) == 1


def test_session_affinity_only_for_the_canary_strategy():
    ab = {**AB, "sessionAffinity": {"cookieName": "c"}}
    assert len(build_httproute(make_canary({}, ab, status=RUNNING), Routes(0, 100))["spec"]["rules"]) == 2
    bg = {**BG_MIRROR, "sessionAffinity": {"cookieName": "c"}}
    assert len(build_httproute(make_canary({}, bg, status=RUNNING), Routes(0, 100))["spec"]["rules"]) == 1


def test_session_affinity_cookie_names_must_differ():
    analysis = {**AFFINITY, "sessionAffinity": {"cookieName": "same", "primaryCookieName": "same"}}
    with pytest.raises(RouterError, match="primaryCookieName"):
        build_httproute(make_canary({}, analysis, status=RUNNING), Routes(90, 10))


# ---- a field check written from the Gateway API reference (HTTPRoute v1 / v1beta1) -------------

_STRING_MATCH = {"type": {"Exact", "RegularExpression"}, "name": str, "value": str}
_MODIFIER = {"set": [{"name": str, "value": str}], "add": [{"name": str, "value": str}], "remove": [str]}
_BACKEND_OBJECT = {"group": str, "kind": str, "name": str, "namespace": str, "port": int}


def _filter_schema(version: str) -> dict:
    schema = {
        "type": {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                 "URLRewrite", "ExtensionRef"} | ({"CORS"} if version == "v1" else set()),
        "requestHeaderModifier": _MODIFIER,
        "responseHeaderModifier": _MODIFIER,
        "requestMirror": {"backendRef": _BACKEND_OBJECT, **({"percent": int} if version == "v1" else {})},
        "urlRewrite": {"hostname": str, "path": {"type": {"ReplaceFullPath", "ReplacePrefixMatch"},
                                                 "replaceFullPath": str, "replacePrefixMatch": str}},
    }
    if version == "v1":
        schema["cors"] = {"allowOrigins": [str], "allowCredentials": bool, "allowMethods": [str],
                          "allowHeaders": [str], "exposeHeaders": [str], "maxAge": int}
    return schema


def httproute_schema(version: str) -> dict:
    rule = {
        "matches": [{"path": {"type": {"Exact", "PathPrefix", "RegularExpression"}, "value": str},
                     "headers": [_STRING_MATCH], "queryParams": [_STRING_MATCH],
                     "method": {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}}],
        "filters": [_filter_schema(version)],
        "backendRefs": [{**_BACKEND_OBJECT, "weight": int, "filters": [_filter_schema(version)]}],
    }
    if version == "v1":
        rule["timeouts"] = {"request": str, "backendRequest": str}
    return {
        "apiVersion": {f"gateway.networking.k8s.io/{version}"},
        "kind": {"HTTPRoute"},
        "metadata": dict,
        "spec": {"parentRefs": [{"group": str, "kind": str, "namespace": str, "name": str, "sectionName": str,
                                 "port": int}],
                 "hostnames": [str], "rules": [rule]},
    }


def check(value, schema, where="") -> None:
    if schema is dict:
        assert isinstance(value, dict), where
    elif isinstance(schema, type):
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), f"{where}: {value!r}"
    elif isinstance(schema, set):
        assert value in schema, f"{where}: {value!r} not in {sorted(schema)}"
    elif isinstance(schema, list):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check(item, schema[0], f"{where}[{i}]")
    else:
        assert isinstance(value, dict), where
        unknown = set(value) - set(schema)
        assert not unknown, f"{where}: unknown fields {sorted(unknown)}"
        for key, item in value.items():
            check(item, schema[key], f"{where}.{key}")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize("case", sorted(SPECS))
def test_objects_match_the_gateway_api_fields(case, version):
    _, route = build(case, version)
    check(route, httproute_schema(version))


@pytest.mark.parametrize("mutate", [
    lambda r: r["spec"]["rules"][0].update(timeout={"request": "1s"}),
    lambda r: r["spec"]["rules"][0]["backendRefs"][0].update(weigth=1),
    lambda r: r["spec"]["rules"][0]["matches"][0]["path"].update(type="Prefix"),
    lambda r: r["spec"]["parentRefs"][0].update(section="http"),
])
def test_field_check_catches_a_misspelled_field(mutate):
    _, route = build("options")
    mutate(route)
    with pytest.raises(AssertionError):
        check(route, httproute_schema("v1"))


# ---- read_routes -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize("case", sorted(SPECS))
def test_read_routes_round_trip(case, version):
    svc, analysis, status, routes = SPECS[case]
    canary = make_canary(svc, analysis, status=status)
    assert read_routes(canary, build_httproute(canary, routes, version)) == routes


def test_read_routes_of_foreign_and_defaulted_routes():
    canary = make_canary()
    foreign = {"spec": {"rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}]}}
    assert read_routes(canary, foreign) is None
    # weight defaults to 1 and group/kind may be left to their defaults
    defaulted = {"spec": {"rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 9898},
                                                     {"name": "podinfo-canary", "port": 9898, "weight": 3}]}]}}
    assert read_routes(canary, defaulted) == Routes(1, 3)
    # backends in another namespace or of another kind are not ours
    other_ns = copy.deepcopy(defaulted)
    other_ns["spec"]["rules"][0]["backendRefs"][1]["namespace"] = "elsewhere"
    assert read_routes(canary, other_ns) is None
    other_kind = copy.deepcopy(defaulted)
    other_kind["spec"]["rules"][0]["backendRefs"][0]["kind"] = "ServiceImport"
    assert read_routes(canary, other_kind) is None


# ---- Accepted status -------------------------------------------------------------------------


def routed(generation: int = 2, parents: list | None = None) -> dict:
    route = build_httproute(make_canary(gateway_refs=[GATEWAY, {"name": "internal", "sectionName": "http"}]))
    route["metadata"]["generation"] = generation
    if parents is not None:
        route["status"] = {"parents": parents}
    return route


def parent(name: str, status: str = "True", generation: int = 2, namespace: str | None = None, **cond) -> dict:
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    if name == "internal":
        ref["sectionName"] = "http"
    return {"parentRef": ref, "controllerName": "example.com/gateway",
            "conditions": [{"type": "ResolvedRefs", "status": "True"},
                           {"type": "Accepted", "status": status, "observedGeneration": generation, **cond}]}


def test_route_status_problem():
    assert route_status_problem(routed()) is None  # no controller reports: accepted
    assert route_status_problem(routed(parents=[])) is None
    ok = [parent("gateway", namespace="istio-ingress"), parent("internal")]
    assert route_status_problem(routed(parents=ok)) is None
    refused = [parent("gateway", namespace="istio-ingress"),
               parent("internal", "False", reason="NotAllowedByListeners", message="no listener allows it")]
    problem = route_status_problem(routed(parents=refused))
    assert "internal" in problem and "NotAllowedByListeners" in problem and "no listener allows it" in problem
    assert "gateway" not in problem.replace("Gateway", "")  # the accepting parent is not blamed
    stale = [parent("gateway", namespace="istio-ingress", generation=1), parent("internal")]
    assert "generation 2" in route_status_problem(routed(parents=stale))
    no_accepted = [{"parentRef": {"name": "internal", "sectionName": "http"}, "conditions": []}]
    assert "not reported Accepted" in route_status_problem(routed(parents=no_accepted))
    # a parent the spec no longer names is ignored
    gone = [parent("old-gateway", "False", reason="NoMatchingParent")]
    assert route_status_problem(routed(parents=gone)) is None


# ---- write logic against an in-memory API ------------------------------------------------------


class FakeKube(_FakeKube):
    def __init__(self, served=("v1", "v1beta1")):
        super().__init__(served)

    async def served(self, group, version):
        return group == "gateway.networking.k8s.io" and version in self.served_versions


KEY = ("httproutes", "test", "podinfo")


async def test_router_lifecycle_in_memory():
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    assert isinstance(router, Router)
    canary = make_canary()
    assert await router.get_routes(canary) is None
    await router.reconcile(canary)
    assert kube.requests["create"] == 1
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.set_routes(canary, Routes(70, 30))
    assert await router.get_routes(canary) == Routes(70, 30)
    writes = kube.writes
    await router.reconcile(canary)  # keeps the weights, and writes nothing
    await router.set_routes(canary, Routes(70, 30))
    assert kube.writes == writes
    # a spec change is applied by reconcile, weights (and mirroring) kept
    await router.set_routes(canary, Routes(100, 0, mirrored=True))
    changed = make_canary({"timeout": "5s"})
    await router.reconcile(changed)
    rule = kube.objects[KEY]["spec"]["rules"][0]
    assert rule["timeouts"] == {"request": "5s"}
    assert await router.get_routes(changed) == Routes(100, 0, mirrored=True)
    assert await router.status_problem(changed) is None
    # finalize leaves our own route alone (garbage collection removes it)
    before = copy.deepcopy(kube.objects)
    await router.finalize(canary)
    assert kube.objects == before


async def test_router_reads_from_the_watch_cache():
    kube = FakeKube()
    cache: dict = {}
    router = GatewayAPIRouter(kube, cache=lambda plural, ns, name: cache.get((plural, ns, name)))
    canary = make_canary()
    await router.reconcile(canary)
    cache[KEY] = copy.deepcopy(kube.objects[KEY])
    gets = kube.requests.get("get", 0)
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.reconcile(canary)
    assert kube.requests.get("get", 0) == gets  # idle: served from the cache
    # a stale cache entry: the write conflicts, the router retries with a fresh read
    await router.set_routes(canary, Routes(90, 10))
    await router.set_routes(canary, Routes(80, 20))
    assert read_routes(canary, kube.objects[KEY]) == Routes(80, 20)


async def test_status_problem_from_the_route():
    kube = FakeKube()
    router = GatewayAPIRouter(kube)
    canary = make_canary()
    assert await router.status_problem(canary) is None  # no route yet
    await router.reconcile(canary)
    kube.objects[KEY]["metadata"]["generation"] = 1
    kube.objects[KEY]["status"] = {"parents": [parent("gateway", "False", 1, "istio-ingress",
                                                      reason="NoMatchingParent")]}
    assert "NoMatchingParent" in await router.status_problem(canary)
    assert await router.get_routes(canary) == Routes(100, 0)  # the weights are still reported


async def test_takeover_and_finalize_in_memory():
    kube = FakeKube()
    original = {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}]}
    kube.objects[KEY] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "1",
                     "annotations": {"owner": "team-a"}, "labels": {"app": "podinfo"}},
        "spec": copy.deepcopy(original),
    }
    router = GatewayAPIRouter(kube)
    canary = make_canary()
    assert await router.get_routes(canary) is None  # not ours yet
    await router.reconcile(canary)
    route = kube.objects[KEY]
    assert json.loads(route["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original
    assert route["metadata"]["annotations"]["owner"] == "team-a"
    assert "ownerReferences" not in route["metadata"]
    assert route["spec"] == build_httproute(canary)["spec"]
    await router.set_routes(canary, Routes(60, 40))
    await router.reconcile(canary)
    route = kube.objects[KEY]
    assert json.loads(route["metadata"]["annotations"][ORIGINAL_ANNOTATION]) == original  # not overwritten
    assert await router.get_routes(canary) == Routes(60, 40)
    await router.finalize(canary)
    route = kube.objects[KEY]
    assert route["spec"] == original
    assert route["metadata"]["annotations"] == {"owner": "team-a"}
    assert route["metadata"]["labels"] == {"app": "podinfo"}
    writes = kube.writes
    await router.finalize(canary)
    assert kube.writes == writes


async def test_version_discovery():
    assert await GatewayAPIRouter(FakeKube()).version() == "v1"
    # gatewayapi:v1 falls back to v1beta1 where only that is served, and renders its shape
    beta_only = FakeKube(served=("v1beta1",))
    router = make_router("gatewayapi:v1", beta_only)
    assert await router.api_version() == "gateway.networking.k8s.io/v1beta1"
    await router.reconcile(make_canary({"timeout": "5s"}))
    assert "timeouts" not in beta_only.objects[KEY]["spec"]["rules"][0]
    assert await make_router("gatewayapi:v1beta1", FakeKube()).version() == "v1beta1"
    with pytest.raises(RouterError, match="v1beta1"):
        await make_router("gatewayapi:v1beta1", FakeKube(served=("v1",))).version()
    with pytest.raises(RouterError, match="gateway.networking.k8s.io"):
        await GatewayAPIRouter(FakeKube(served=())).version()
    with pytest.raises(RouterError, match="v2"):
        GatewayAPIRouter(FakeKube(), "v2")


def test_make_router_dispatch():
    cache = lambda *_: None  # noqa: E731
    router = make_router("gatewayapi:v1", FakeKube(), cache=cache)
    assert isinstance(router, GatewayAPIRouter) and router.requested == "v1" and router._cache is cache
    assert make_router("gatewayapi:v1beta1", FakeKube()).requested == "v1beta1"
