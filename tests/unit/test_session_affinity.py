"""Session affinity: cookie derivation (canary.routers.affinity) and the Istio VirtualService
shapes (sticky rules, Set-Cookie on destinations, expiry), validated against the Istio schema."""

from __future__ import annotations

import json
import re

import pytest
from cloudcoil.models.istio.networking import v1beta1 as istio_v1beta1

from canary.models import Canary
from canary.routers.affinity import Sticky, cookie_regex, cookie_value, set_cookie_header, sticky
from canary.routers.base import RouterError
from canary.routers.istio import build_virtual_service, read_routes
from canary.types import Routes
from testbed import routing

AFFINITY = {"interval": "30s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
            "sessionAffinity": {"cookieName": "canary-cookie", "maxAge": 3600}}
RUNNING = {"phase": "Progressing", "lastAppliedSpec": "rev-2"}


def make_canary(analysis: dict | None = None, status: dict | None = None, service: dict | None = None,
                uid: str | None = "uid-1") -> Canary:
    meta = {"name": "podinfo", "namespace": "test"}
    if uid:
        meta["uid"] = uid
    obj = {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": meta,
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898, **(service or {})},
                 "analysis": analysis or AFFINITY},
    }
    if status is not None:
        obj["status"] = status
    return Canary.from_obj(obj)


def dest(host: str, weight: int, set_cookie: str | None = None) -> dict:
    out = {"destination": {"host": host}, "weight": weight}
    if set_cookie:
        out["headers"] = {"response": {"add": {"Set-Cookie": set_cookie}}}
    return out


def schema_round_trip(vs: dict) -> None:
    dumped = istio_v1beta1.VirtualService.model_validate(vs).model_dump(by_alias=True, exclude_none=True,
                                                                        mode="json")
    assert json.loads(json.dumps(dumped)) == vs


# ---- cookies -----------------------------------------------------------------------------


def test_cookie_value_is_ten_letters_and_deterministic():
    v = cookie_value("uid-1", "rev-2", "canary")
    assert re.fullmatch(r"[a-z]{10}", v)
    assert v == cookie_value("uid-1", "rev-2", "canary")
    assert len({v, cookie_value("uid-1", "rev-3", "canary"), cookie_value("uid-2", "rev-2", "canary"),
                cookie_value("uid-1", "rev-2", "primary")}) == 4


def test_cookie_regex_matches_only_that_cookie():
    pattern = re.compile(cookie_regex("canary-cookie=abcdefghij"))
    for header in ("canary-cookie=abcdefghij", "a=1; canary-cookie=abcdefghij", "canary-cookie=abcdefghij; b=2",
                   "a=1;canary-cookie=abcdefghij;b=2"):
        assert pattern.fullmatch(header), header
    for header in ("canary-cookie=abcdefghik", "xcanary-cookie=abcdefghij", "canary-cookie=abcdefghijk", ""):
        assert not pattern.fullmatch(header), header
    # metacharacters in a name are escaped
    assert re.fullmatch(cookie_regex("a.b=c"), "a.b=c") and not re.fullmatch(cookie_regex("a.b=c"), "axb=c")
    # the traffic simulator can build a request that matches it (RE2-compatible subset)
    example = routing.example_for_regex(cookie_regex("canary-cookie=abcdefghij"))
    assert example is not None and "canary-cookie=abcdefghij" in example


def test_set_cookie_attributes():
    analysis = {**AFFINITY, "sessionAffinity": {"cookieName": "c", "domain": "example.com", "path": "/app",
                                                "httpOnly": True, "secure": True, "sameSite": "Strict",
                                                "partitioned": True}}
    assert set_cookie_header("c=v", 60, make_canary(analysis)) == \
        "c=v; Max-Age=60; Domain=example.com; Path=/app; HttpOnly; Secure; SameSite=Strict; Partitioned"
    assert set_cookie_header("c=v", -1, make_canary()) == "c=v; Max-Age=-1"


def test_sticky_plan():
    canary_cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    assert sticky(make_canary(status=RUNNING), Routes(90, 10)) == Sticky(
        canary_cookie=canary_cookie, canary_set_cookie=f"{canary_cookie}; Max-Age=3600")
    # default maxAge is one day
    no_age = {**AFFINITY, "sessionAffinity": {"cookieName": "canary-cookie"}}
    assert sticky(make_canary(no_age, RUNNING), Routes(90, 10)).canary_set_cookie.endswith("Max-Age=86400")
    # no affinity configured
    assert sticky(make_canary({"interval": "1m", "stepWeight": 10}, RUNNING), Routes(90, 10)) is None
    # at weight 0 after a run: expire; before any run: nothing
    for phase in ("Succeeded", "Failed", "Promoting", "Finalising", "Progressing"):
        plan = sticky(make_canary(status={"phase": phase, "lastAppliedSpec": "rev-2"}), Routes())
        assert plan == Sticky(expired_cookie=canary_cookie, expire_set_cookie=f"{canary_cookie}; Max-Age=-1")
    for status in (None, {"phase": "Initialized", "lastAppliedSpec": "rev-1"}, {"phase": "Initializing"}):
        assert sticky(make_canary(status=status), Routes()) == Sticky()
    # a cookie recorded in the status is used as is (Flagger stores name=value)
    recorded = {**RUNNING, "sessionAffinityCookie": "canary-cookie=fromstatus",
                "previousSessionAffinityCookie": "canary-cookie=older"}
    assert sticky(make_canary(status=recorded), Routes(90, 10)).canary_cookie == "canary-cookie=fromstatus"
    assert sticky(make_canary(status=recorded), Routes()).expired_cookie == "canary-cookie=older"


# ---- Istio shapes -----------------------------------------------------------------------------


def test_istio_session_affinity_rules():
    canary = make_canary(status=RUNNING)
    cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    vs = build_virtual_service(canary, Routes(80, 20))
    assert vs["spec"]["http"] == [
        {"match": [{"headers": {"cookie": {"regex": cookie_regex(cookie)}}}],
         "route": [dest("podinfo-canary", 100)]},
        {"route": [dest("podinfo-primary", 80), dest("podinfo-canary", 20, f"{cookie}; Max-Age=3600")]},
    ]
    assert read_routes(canary, vs) == Routes(80, 20)
    schema_round_trip(vs)


def test_istio_session_affinity_primary_cookie_service_match_and_options():
    analysis = {**AFFINITY, "sessionAffinity": {"cookieName": "canary-cookie", "primaryCookieName": "primary-cookie",
                                                "maxAge": 600, "path": "/"}}
    service = {"match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}, "headers": {"x-a": {"exact": "b"}}}],
               "timeout": "10s"}
    canary = make_canary(analysis, RUNNING, service)
    canary_cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    primary_cookie = f"primary-cookie={cookie_value('uid-1', 'rev-2', 'primary')}"
    http = build_virtual_service(canary, Routes(70, 30))["spec"]["http"]
    assert len(http) == 3

    def matches(cookie):
        header = {"cookie": {"regex": cookie_regex(cookie)}}
        return [{"uri": {"prefix": "/api"}, "headers": header},
                {"uri": {"prefix": "/v2"}, "headers": {"x-a": {"exact": "b"}, **header}}]

    assert http[0] == {"match": matches(canary_cookie), "timeout": "10s", "route": [dest("podinfo-canary", 100)]}
    assert http[1] == {"match": matches(primary_cookie), "timeout": "10s", "route": [dest("podinfo-primary", 100)]}
    assert http[2] == {"match": service["match"], "timeout": "10s", "route": [
        dest("podinfo-primary", 70, f"{primary_cookie}; Max-Age=30; Path=/"),  # Max-Age = analysis interval
        dest("podinfo-canary", 30, f"{canary_cookie}; Max-Age=600; Path=/")]}
    assert read_routes(canary, {"spec": {"http": http}}) == Routes(70, 30)
    schema_round_trip(build_virtual_service(canary, Routes(70, 30)))


def test_istio_session_affinity_expiry_after_a_run():
    canary = make_canary(status={"phase": "Succeeded", "lastAppliedSpec": "rev-2"})
    cookie = f"canary-cookie={cookie_value('uid-1', 'rev-2', 'canary')}"
    vs = build_virtual_service(canary, Routes())
    assert vs["spec"]["http"] == [
        {"match": [{"headers": {"cookie": {"regex": cookie_regex(cookie)}}}],
         "route": [dest("podinfo-primary", 100, f"{cookie}; Max-Age=-1")]},
        {"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]},
    ]
    assert read_routes(canary, vs) == Routes(100, 0)
    schema_round_trip(vs)
    # an initialized canary that never ran has just the weighted rule
    fresh = make_canary(status={"phase": "Initialized", "lastAppliedSpec": "rev-1"})
    assert build_virtual_service(fresh)["spec"]["http"] == [
        {"route": [dest("podinfo-primary", 100), dest("podinfo-canary", 0)]}]


def test_istio_session_affinity_is_idempotent_and_mirror_stays_on_the_weighted_rule():
    analysis = {**AFFINITY, "mirror": True}
    canary = make_canary(analysis, RUNNING)
    assert build_virtual_service(canary, Routes(90, 10)) == build_virtual_service(canary, Routes(90, 10))
    http = build_virtual_service(canary, Routes(90, 10, mirrored=True))["spec"]["http"]
    assert "mirror" not in http[0] and http[1]["mirror"] == {"host": "podinfo-canary"}
    assert read_routes(canary, {"spec": {"http": http}}) == Routes(90, 10, mirrored=True)


def test_istio_session_affinity_ignored_for_ab_and_tcp():
    ab = {"interval": "1m", "iterations": 5, "match": [{"headers": {"x-canary": {"exact": "1"}}}],
          "sessionAffinity": {"cookieName": "c"}}
    http = build_virtual_service(make_canary(ab, RUNNING), Routes(0, 100))["spec"]["http"]
    assert len(http) == 2 and all("headers" not in d for r in http for d in r["route"])
    tcp = build_virtual_service(make_canary(status=RUNNING, service={"appProtocol": "tcp"}), Routes(90, 10))
    assert "http" not in tcp["spec"]


def test_istio_cookie_names_must_differ():
    analysis = {**AFFINITY, "sessionAffinity": {"cookieName": "x", "primaryCookieName": "x"}}
    with pytest.raises(RouterError, match="primaryCookieName"):
        build_virtual_service(make_canary(analysis, RUNNING), Routes(90, 10))


def test_simulator_routes_sticky_requests_to_the_canary():
    """The traffic simulator's matched share carries the sticky cookie: it all reaches the canary."""
    canary = make_canary(status=RUNNING)
    spec = build_virtual_service(canary, Routes(90, 10))["spec"]
    classes = routing.synthesize_requests(routing.KIND_VS, spec, 0.1, "test")
    matched = next(c for c in classes if c.name == "matched")
    action = routing.route_istio(spec, "test", matched.request)
    assert action.rule == 0 and [b.service.name for b in action.backends] == ["podinfo-canary"]
