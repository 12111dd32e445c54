"""Route resolution of the traffic simulator (testbed/routing.py), no cluster needed."""

from __future__ import annotations

import re

import pytest

from testbed import routing
from testbed.routing import (
    Apportioner,
    Request,
    ServiceRef,
    World,
    example_for_regex,
    resolve,
    resolve_host,
    route_httproute,
    route_istio,
    synthesize_requests,
)

NS = "demo"


def svc(name: str, selector: dict | None = None, ns: str = NS) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector or {"app": name}}}


def dep(name: str, ready: int = 2, labels: dict | None = None, ann: dict | None = None, ns: str = NS) -> dict:
    status = {"replicas": ready, "readyReplicas": ready} if ready else {"replicas": 0}
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"metadata": {"labels": labels or {"app": name}, "annotations": ann or {}}}},
        "status": status,
    }


def world(*objs: dict) -> World:
    services = [o for o in objs if "selector" in (o.get("spec") or {})]
    deployments = [o for o in objs if "template" in (o.get("spec") or {})]
    return World.from_objects(services, deployments)


def vs_weights(primary: int, canary: int) -> dict:
    return {
        "hosts": ["podinfo"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": primary},
                    {"destination": {"host": "podinfo-canary"}, "weight": canary},
                ]
            }
        ],
    }


BASE_WORLD = (
    svc("podinfo-primary"),
    svc("podinfo-canary"),
    dep("podinfo-primary"),
    dep("podinfo-canary"),
)


# ---------------------------------------------------------------- regexes


@pytest.mark.parametrize(
    "pattern",
    [
        "^(.*?;)?(type=insider)(;.*)?$",
        ".*insider.*",
        "insider",
        "^(?:v1|v2)$",
        "[a-z]+-canary",
        r"\d{3}",
        "[^abc]+",
        r"^Mozilla/5\.0.*Firefox.*$",
        "(?i)chrome",
        r"\w+@\w+\.com",
    ],
)
def test_regex_examples_fully_match(pattern):
    value = example_for_regex(pattern)
    assert value is not None
    assert re.fullmatch(pattern, value)


def test_cookie_regex_gives_plain_cookie():
    assert example_for_regex("^(.*?;)?(type=insider)(;.*)?$") == "type=insider"


@pytest.mark.parametrize("pattern", [r"(a)\1", "[", "(?<=x)y"])
def test_unsupported_or_invalid_regex_gives_none(pattern):
    assert example_for_regex(pattern) is None


# ---------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    "host,expected",
    [
        ("podinfo", ServiceRef(NS, "podinfo")),
        ("podinfo.other", ServiceRef("other", "podinfo")),
        ("podinfo.other.svc", ServiceRef("other", "podinfo")),
        ("podinfo.other.svc.cluster.local", ServiceRef("other", "podinfo")),
        ("PodInfo.Other.svc.cluster.local.", ServiceRef("other", "podinfo")),
    ],
)
def test_resolve_host(host, expected):
    assert resolve_host(host, NS) == expected


def test_external_host():
    ref = resolve_host("api.example.com", NS)
    assert ref.external and ref.fqdn == "api.example.com"


# ---------------------------------------------------------------- istio rules


def test_istio_weights_normalised():
    action = route_istio(vs_weights(80, 20), NS, Request())
    assert action.rule == 0
    assert [(b.service.name, round(b.fraction, 3)) for b in action.backends] == [
        ("podinfo-primary", 0.8),
        ("podinfo-canary", 0.2),
    ]


def test_istio_single_destination_without_weight_gets_all():
    spec = {"http": [{"route": [{"destination": {"host": "podinfo-primary"}}]}]}
    action = route_istio(spec, NS, Request())
    assert [(b.service.name, b.fraction) for b in action.backends] == [("podinfo-primary", 1.0)]


def test_istio_missing_weight_among_many_is_zero():
    spec = {"http": [{"route": [{"destination": {"host": "a"}, "weight": 100}, {"destination": {"host": "b"}}]}]}
    action = route_istio(spec, NS, Request())
    assert [(b.service.name, b.fraction) for b in action.backends] == [("a", 1.0), ("b", 0.0)]


def test_istio_first_matching_rule_wins():
    spec = {
        "http": [
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}], "route": [{"destination": {"host": "c"}}]},
            {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api"}}]},
            {"route": [{"destination": {"host": "p"}}]},
        ]
    }
    assert route_istio(spec, NS, Request(headers={"x-canary": "insider"})).backends[0].service.name == "c"
    assert route_istio(spec, NS, Request(headers={"x-canary": "other"})).backends[0].service.name == "p"
    assert route_istio(spec, NS, Request(path="/api/v1")).backends[0].service.name == "api"
    both = Request(path="/api", headers={"x-canary": "insider"})
    assert route_istio(spec, NS, both).rule == 0


@pytest.mark.parametrize(
    "match,req,hit",
    [
        ({"headers": {"x-user": {"prefix": "ins"}}}, Request(headers={"x-user": "insider"}), True),
        ({"headers": {"x-user": {"regex": "ins.*"}}}, Request(headers={"x-user": "insider"}), True),
        ({"headers": {"x-user": {"regex": "ins"}}}, Request(headers={"x-user": "insider"}), False),  # full match
        ({"headers": {"X-User": {"exact": "a"}}}, Request(headers={"x-user": "a"}), True),
        ({"headers": {"x-user": {}}}, Request(headers={"x-user": "anything"}), True),
        ({"headers": {"x-user": {}}}, Request(), False),
        ({"withoutHeaders": {"x-user": {}}}, Request(), True),
        ({"withoutHeaders": {"x-user": {}}}, Request(headers={"x-user": "a"}), False),
        ({"uri": {"exact": "/a"}}, Request(path="/a"), True),
        ({"uri": {"exact": "/a"}}, Request(path="/a/b"), False),
        ({"uri": {"prefix": "/A"}, "ignoreUriCase": True}, Request(path="/a/b"), True),
        ({"uri": {"regex": "/v[0-9]+/.*"}}, Request(path="/v2/x"), True),
        ({"method": {"exact": "POST"}}, Request(), False),
        ({"queryParams": {"canary": {"exact": "1"}}}, Request(query={"canary": "1"}), True),
        ({"gateways": ["mesh"]}, Request(), True),
        ({"gateways": ["istio-system/public"]}, Request(), False),
        ({"sourceLabels": {"app": "x"}}, Request(), False),
        ({"name": "named", "uri": {"prefix": "/"}}, Request(), True),
    ],
)
def test_istio_match_conditions(match, req, hit):
    spec = {"http": [{"match": [match], "route": [{"destination": {"host": "hit"}}]}]}
    action = route_istio(spec, NS, req)
    assert (action.rule == 0) is hit
    if not hit:
        assert action.status == routing.CODE_NO_ROUTE


def test_istio_match_list_is_or():
    spec = {
        "http": [
            {
                "match": [{"headers": {"a": {"exact": "1"}}}, {"headers": {"b": {"exact": "2"}}}],
                "route": [{"destination": {"host": "x"}}],
            }
        ]
    }
    assert route_istio(spec, NS, Request(headers={"b": "2"})).rule == 0
    assert route_istio(spec, NS, Request(headers={"c": "3"})).rule is None


def test_istio_mirror_percentage_and_legacy_forms():
    rule = {"route": [{"destination": {"host": "p"}}], "mirror": {"host": "c"}}
    assert [(m.service.name, m.fraction) for m in route_istio({"http": [rule]}, NS, Request()).mirrors] == [
        ("c", 1.0)
    ]
    rule2 = dict(rule, mirrorPercentage={"value": 25.0})
    assert route_istio({"http": [rule2]}, NS, Request()).mirrors[0].fraction == pytest.approx(0.25)
    rule3 = dict(rule, mirrorPercent=10)
    assert route_istio({"http": [rule3]}, NS, Request()).mirrors[0].fraction == pytest.approx(0.10)
    rule4 = {"route": [{"destination": {"host": "p"}}],
             "mirrors": [{"destination": {"host": "m"}, "percentage": {"value": 50}}]}
    assert [(m.service.name, m.fraction) for m in route_istio({"http": [rule4]}, NS, Request()).mirrors] == [
        ("m", 0.5)
    ]


# ---------------------------------------------------------------- synthetic requests


def test_header_class_for_exact_header():
    spec = {
        "http": [
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}], "route": [{"destination": {"host": "c"}}]},
            {"route": [{"destination": {"host": "p"}}]},
        ]
    }
    classes = synthesize_requests(routing.KIND_VS, spec, 0.1)
    assert [(c.name, c.share) for c in classes] == [("matched", 0.1), ("default", pytest.approx(0.9))]
    assert classes[0].request.headers == {"x-canary": "insider"}
    assert classes[1].request.headers == {}


def test_header_class_for_flagger_cookie_regex():
    spec = {
        "http": [
            {
                "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}}],
                "route": [{"destination": {"host": "c"}}],
            },
            {"route": [{"destination": {"host": "p"}}]},
        ]
    }
    classes = synthesize_requests(routing.KIND_VS, spec, 0.1)
    assert classes[0].request.headers == {"cookie": "type=insider"}


def test_unsatisfiable_first_header_rule_is_skipped():
    spec = {
        "http": [
            {"match": [{"headers": {"x": {"regex": r"(a)\1"}}}], "route": [{"destination": {"host": "c"}}]},
            {"match": [{"headers": {"y": {"exact": "later"}}}], "route": [{"destination": {"host": "c"}}]},
            {"route": [{"destination": {"host": "p"}}]},
        ]
    }
    classes = synthesize_requests(routing.KIND_VS, spec, 0.1)
    assert [c.name for c in classes] == ["default"]


def test_no_match_rules_means_one_class():
    classes = synthesize_requests(routing.KIND_VS, vs_weights(90, 10), 0.1)
    assert [(c.name, c.share) for c in classes] == [("default", 1.0)]


def test_default_request_satisfies_catch_all_uri_prefix():
    spec = {
        "http": [
            {"match": [{"headers": {"x-canary": {"exact": "1"}}, "uri": {"prefix": "/api"}}],
             "route": [{"destination": {"host": "c"}}]},
            {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "p"}}]},
        ]
    }
    classes = synthesize_requests(routing.KIND_VS, spec, 0.2)
    assert classes[0].request.path == "/api" and classes[0].request.headers == {"x-canary": "1"}
    assert classes[1].request.path == "/api"
    assert route_istio(spec, NS, classes[0].request).rule == 0
    assert route_istio(spec, NS, classes[1].request).rule == 1


# ---------------------------------------------------------------- resolution against the cluster


def test_resolve_weights_to_workloads():
    res = resolve(routing.KIND_VS, NS, "podinfo", vs_weights(80, 20), world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(0.8), "podinfo-canary": pytest.approx(0.2)}
    j = res.to_json()
    assert j["workloads"] == {"podinfo-canary": 20.0, "podinfo-primary": 80.0}


def test_resolve_header_match_sends_matched_share_to_canary():
    spec = {
        "http": [
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}],
             "route": [{"destination": {"host": "podinfo-canary"}}]},
            {"route": [{"destination": {"host": "podinfo-primary"}}]},
        ]
    }
    res = resolve(routing.KIND_VS, NS, "podinfo", spec, world(*BASE_WORLD), header_share=0.1)
    assert res.workload_shares() == {"podinfo-canary": pytest.approx(0.1), "podinfo-primary": pytest.approx(0.9)}


def test_service_selects_deployments_by_ready_replicas():
    objs = (
        svc("podinfo", {"app": "podinfo"}),
        dep("podinfo-primary", ready=3, labels={"app": "podinfo", "track": "p"}),
        dep("podinfo-canary", ready=1, labels={"app": "podinfo", "track": "c"}),
        dep("unrelated", ready=5, labels={"app": "other"}),
    )
    spec = {"http": [{"route": [{"destination": {"host": "podinfo"}}]}]}
    res = resolve(routing.KIND_VS, NS, "vs", spec, world(*objs))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(0.75), "podinfo-canary": pytest.approx(0.25)}


def test_no_ready_replicas_gives_503_unknown():
    objs = (svc("podinfo-primary"), svc("podinfo-canary"), dep("podinfo-primary"), dep("podinfo-canary", ready=0))
    res = resolve(routing.KIND_VS, NS, "podinfo", vs_weights(50, 50), world(*objs))
    leaves = {(leaf.service.name, leaf.workload_name, leaf.code): share for leaf, share in res.leaves.values()}
    assert leaves == {
        ("podinfo-primary", "podinfo-primary", None): pytest.approx(0.5),
        ("podinfo-canary", "unknown", 503): pytest.approx(0.5),
    }


def test_missing_service_gives_503_for_istio_and_500_for_httproute():
    res = resolve(routing.KIND_VS, NS, "v", {"http": [{"route": [{"destination": {"host": "ghost"}}]}]}, world())
    [(leaf, share)] = res.leaves.values()
    assert (leaf.code, leaf.workload_name, share) == (503, "unknown", 1.0)
    hr = {"rules": [{"backendRefs": [{"name": "ghost", "port": 80}]}]}
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", hr, world())
    [(leaf, share)] = res.leaves.values()
    assert (leaf.code, leaf.workload_name) == (500, "unknown")


def test_unmatched_requests_have_no_destination():
    spec = {"http": [{"match": [{"uri": {"exact": "/only"}}], "route": [{"destination": {"host": "podinfo-primary"}}]}]}
    res = resolve(routing.KIND_VS, NS, "v", spec, world(*BASE_WORLD))
    # the default request is derived from the catch-all condition: /only
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(1.0)}
    spec2 = {"http": [{"match": [{"headers": {"x": {"exact": "1"}}}], "route": [{"destination": {"host": "podinfo-primary"}}]}]}
    res2 = resolve(routing.KIND_VS, NS, "v", spec2, world(*BASE_WORLD), header_share=0.1)
    assert res2.workload_shares() == {"podinfo-primary": pytest.approx(0.1), "none": pytest.approx(0.9)}


def test_mirror_resolves_to_workload():
    spec = vs_weights(100, 0)
    spec["http"][0]["mirror"] = {"host": "podinfo-canary"}
    spec["http"][0]["mirrorPercentage"] = {"value": 30}
    res = resolve(routing.KIND_VS, NS, "podinfo", spec, world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(1.0)}
    [(leaf, share)] = res.mirrors.values()
    assert leaf.workload_name == "podinfo-canary" and share == pytest.approx(0.3)


def test_workload_annotations_parsed():
    d = dep("x", ann={routing.ANN_ERROR_RATE: "0.5", routing.ANN_LATENCY_MS: "250"})
    wl = routing.workload_from_deployment(d)
    assert (wl.error_rate, wl.latency_ms, wl.ready) == (0.5, 250.0, 2)
    bad = routing.workload_from_deployment(dep("y", ann={routing.ANN_ERROR_RATE: "lots", routing.ANN_LATENCY_MS: "-3"}))
    assert (bad.error_rate, bad.latency_ms) == (0.0, 0.0)
    assert routing.workload_from_deployment(dep("z", ann={routing.ANN_ERROR_RATE: "7"})).error_rate == 1.0


# ---------------------------------------------------------------- HTTPRoute


def httproute(primary: int | None, canary: int | None, **rule_extra) -> dict:
    refs = [{"name": "podinfo-primary", "port": 9898}, {"name": "podinfo-canary", "port": 9898}]
    if primary is not None:
        refs[0]["weight"] = primary
    if canary is not None:
        refs[1]["weight"] = canary
    return {"parentRefs": [{"name": "gw"}], "rules": [dict({"backendRefs": refs}, **rule_extra)]}


def test_httproute_weights():
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", httproute(80, 20), world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(0.8), "podinfo-canary": pytest.approx(0.2)}


def test_httproute_default_weight_is_one_each():
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", httproute(None, None), world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(0.5), "podinfo-canary": pytest.approx(0.5)}


def test_httproute_zero_weight_backend_gets_nothing_and_all_zero_is_500():
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", httproute(100, 0), world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-primary": pytest.approx(1.0)}
    action = route_httproute(httproute(0, 0), NS, Request())
    assert action.status == 500 and not action.backends


def test_httproute_invalid_backend_kind_gets_500_share():
    spec = {"rules": [{"backendRefs": [{"name": "podinfo-primary", "weight": 1},
                                       {"name": "bucket", "kind": "S3Bucket", "group": "x.io", "weight": 1}]}]}
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", spec, world(*BASE_WORLD))
    leaves = {(leaf.workload_name, leaf.code): share for leaf, share in res.leaves.values()}
    assert leaves == {("podinfo-primary", None): pytest.approx(0.5), ("unknown", 500): pytest.approx(0.5)}


def test_httproute_cross_namespace_backend():
    objs = (svc("podinfo", ns="other"), dep("podinfo", ns="other"))
    spec = {"rules": [{"backendRefs": [{"name": "podinfo", "namespace": "other"}]}]}
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", spec, world(*objs))
    [(leaf, share)] = res.leaves.values()
    assert (leaf.workload.namespace, leaf.workload.name, share) == ("other", "podinfo", 1.0)


def test_httproute_header_rule_and_precedence():
    spec = {
        "rules": [
            {"backendRefs": [{"name": "podinfo-primary"}]},
            {
                "matches": [{"headers": [{"name": "X-Canary", "value": "insider"}]}],
                "backendRefs": [{"name": "podinfo-canary"}],
            },
        ]
    }
    # the header match is more specific than the catch-all, although listed second
    assert route_httproute(spec, NS, Request(headers={"x-canary": "insider"})).rule == 1
    assert route_httproute(spec, NS, Request()).rule == 0
    classes = synthesize_requests(routing.KIND_HTTPROUTE, spec, 0.1)
    assert classes[0].request.headers == {"x-canary": "insider"}
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", spec, world(*BASE_WORLD))
    assert res.workload_shares() == {"podinfo-canary": pytest.approx(0.1), "podinfo-primary": pytest.approx(0.9)}


def test_httproute_regex_header_and_cookie():
    spec = {
        "rules": [
            {
                "matches": [{"headers": [{"type": "RegularExpression", "name": "cookie",
                                           "value": "^(.*?;)?(canary=always)(;.*)?$"}]}],
                "backendRefs": [{"name": "podinfo-canary"}],
            },
            {"backendRefs": [{"name": "podinfo-primary"}]},
        ]
    }
    classes = synthesize_requests(routing.KIND_HTTPROUTE, spec, 0.1)
    assert classes[0].request.headers == {"cookie": "canary=always"}
    assert route_httproute(spec, NS, Request(headers={"cookie": "a=b;canary=always"})).rule == 0


@pytest.mark.parametrize(
    "path_match,path,hit",
    [
        ({"type": "PathPrefix", "value": "/foo"}, "/foo", True),
        ({"type": "PathPrefix", "value": "/foo"}, "/foo/bar", True),
        ({"type": "PathPrefix", "value": "/foo/"}, "/foo", True),
        ({"type": "PathPrefix", "value": "/foo"}, "/foobar", False),
        ({"type": "Exact", "value": "/foo"}, "/foo/", False),
        ({"type": "RegularExpression", "value": "/v[0-9]"}, "/v1", True),
        ({"value": "/"}, "/anything", True),
    ],
)
def test_httproute_path_matching(path_match, path, hit):
    spec = {"rules": [{"matches": [{"path": path_match}], "backendRefs": [{"name": "a"}]}]}
    assert (route_httproute(spec, NS, Request(path=path)).rule == 0) is hit


def test_httproute_precedence_exact_then_longest_prefix_then_order():
    spec = {
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "root"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "api"}]},
            {"matches": [{"path": {"type": "Exact", "value": "/api/x"}}], "backendRefs": [{"name": "exact"}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [{"name": "api2"}]},
        ]
    }
    pick = lambda p: route_httproute(spec, NS, Request(path=p)).backends[0].service.name  # noqa: E731
    assert pick("/api/x") == "exact"
    assert pick("/api/y") == "api"
    assert pick("/other") == "root"


def test_httproute_mirror_filter():
    spec = httproute(100, 0, filters=[{"type": "RequestMirror",
                                       "requestMirror": {"backendRef": {"name": "podinfo-canary", "port": 9898}}}])
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", spec, world(*BASE_WORLD))
    [(leaf, share)] = res.mirrors.values()
    assert (leaf.workload_name, share) == ("podinfo-canary", 1.0)
    spec["rules"][0]["filters"][0]["requestMirror"]["percent"] = 40
    res = resolve(routing.KIND_HTTPROUTE, NS, "r", spec, world(*BASE_WORLD))
    assert list(res.mirrors.values())[0][1] == pytest.approx(0.4)


# ---------------------------------------------------------------- batching


def test_apportioner_is_exact_over_time():
    ap = Apportioner()
    totals = {"a": 0, "b": 0, "c": 0}
    for _ in range(1000):
        for k, n in ap.split(5.0, {"a": 0.8, "b": 0.15, "c": 0.05}).items():
            totals[k] += n
    assert totals == {"a": 4000, "b": 750, "c": 250}


def test_apportioner_fractional_rate():
    ap = Apportioner()
    total = sum(sum(ap.split(0.3, {"x": 1.0}).values()) for _ in range(100))
    assert total == 30


def test_apportioner_drops_carry_of_removed_keys():
    ap = Apportioner()
    ap.split(0.5, {"a": 1.0})
    assert ap.split(0.5, {"b": 1.0}) == {"b": 0}
    assert ap.carry == {"b": 0.5}


# ---------------------------------------------------------------- simulators without an API server


def _sim(*objs: dict, routes: tuple = ()):
    from testbed.trafficsim import Metrics, Store, TrafficSim

    store = Store()
    store.replacer("services")([o for o in objs if "selector" in o["spec"]])
    store.replacer("deployments")([o for o in objs if "template" in o["spec"]])
    store.replacer("virtualservices")([r for r in routes if r["kind"] == "VirtualService"])
    store.replacer("httproutes")([r for r in routes if r["kind"] == "HTTPRoute"])
    metrics = Metrics()
    return store, metrics, TrafficSim(store, metrics, rps=50, seed=7)


def _route(kind: str, name: str, spec: dict) -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def _by(metrics, reporter: str = "destination") -> dict:
    out: dict = {}
    for labels, (count, _) in metrics.requests.items():
        if labels[0] == reporter:
            key = (labels[3], labels[9])  # destination_workload, response_code
            out[key] = out.get(key, 0) + count
    return out


def test_trafficsim_ticks_follow_weights_and_error_rate():
    objs = (svc("podinfo-primary"), svc("podinfo-canary"), dep("podinfo-primary"),
            dep("podinfo-canary", ann={routing.ANN_ERROR_RATE: "0.5", routing.ANN_LATENCY_MS: "100"}))
    _, metrics, sim = _sim(*objs, routes=(_route("VirtualService", "podinfo", vs_weights(80, 20)),))
    for _ in range(200):  # 20 s of traffic
        sim.tick(0.1)
    d = _by(metrics)
    primary = d.get(("podinfo-primary", "200"), 0)
    canary_ok, canary_err = d.get(("podinfo-canary", "200"), 0), d.get(("podinfo-canary", "500"), 0)
    assert primary == 800 and canary_ok + canary_err == 200
    assert 70 <= canary_err <= 130
    assert _by(metrics, "source") == d
    # histogram: +Inf count equals the counter, latencies land around 100 ms
    for labels, (buckets, total, count, _) in metrics.durations.items():
        assert count == metrics.requests[labels][0]
        if labels[3] == "podinfo-canary":
            assert 80 <= total / count <= 120
            le100 = sum(buckets[: routing_bucket_index(100)])
            assert 0 < le100 < count


def routing_bucket_index(le: float) -> int:
    from testbed.trafficsim import DURATION_BUCKETS

    return DURATION_BUCKETS.index(le) + 1


def test_trafficsim_route_change_applies_on_next_tick():
    objs = BASE_WORLD
    store, metrics, sim = _sim(*objs, routes=(_route("HTTPRoute", "podinfo", httproute(90, 10)),))
    sim.tick(1.0)
    assert _by(metrics) == {("podinfo-primary", "200"): 45, ("podinfo-canary", "200"): 5}
    store.handler("httproutes")("MODIFIED", _route("HTTPRoute", "podinfo", httproute(50, 50)))
    sim.tick(1.0)
    assert _by(metrics) == {("podinfo-primary", "200"): 70, ("podinfo-canary", "200"): 30}
    j = sim.routes_json(NS)["routes"][0]
    assert j["workloads"] == {"podinfo-canary": 50.0, "podinfo-primary": 50.0}
    store.handler("httproutes")("DELETED", _route("HTTPRoute", "podinfo", {}))
    sim.tick(1.0)
    assert sim.routes_json()["routes"] == []


def test_trafficsim_503_and_mirror_reporting():
    objs = (svc("podinfo-primary"), svc("podinfo-canary"), dep("podinfo-primary"), dep("podinfo-canary", ready=0),
            svc("shadow"), dep("shadow"))
    spec = vs_weights(50, 50)
    spec["http"][0]["mirror"] = {"host": "shadow"}
    _, metrics, sim = _sim(*objs, routes=(_route("VirtualService", "podinfo", spec),))
    sim.tick(2.0)
    d = _by(metrics)
    assert d[("podinfo-primary", "200")] == 50 and d[("unknown", "503")] == 50
    assert d[("shadow", "200")] == 100
    assert ("shadow", "200") not in _by(metrics, "source")
    unknown = [k for k in metrics.requests if k[3] == "unknown"][0]
    assert (unknown[6], unknown[7], unknown[10]) == ("podinfo-canary", NS, "UH")


def test_trafficsim_exposition_parses():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    _, metrics, sim = _sim(*BASE_WORLD, routes=(_route("VirtualService", "podinfo", vs_weights(80, 20)),))
    sim.tick(1.0)
    reg = CollectorRegistry()
    reg.register(metrics)
    text = generate_latest(reg).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"istio_requests", "istio_request_duration_milliseconds", "sim_route_requests"} <= set(fams)
    assert 'le="25.0"' in text and "istio_request_duration_milliseconds_bucket" in text
    assert 'sim_route_requests_total{destination_workload="podinfo-primary",kind="VirtualService"' in text


def test_podsim_status_ready_and_not_ready():
    from testbed import podsim

    pod = {"metadata": {"name": "p", "namespace": NS, "uid": "u1", "annotations": {}},
           "spec": {"nodeName": "sim-node", "containers": [{"name": "app", "image": "podinfo:6"}]},
           "status": {"phase": "Pending"}}
    st = podsim.desired_status(pod, "10.244.0.2", "10.0.0.10", True, "2024-01-01T00:00:00Z")
    assert st["phase"] == "Running" and st["podIP"] == "10.244.0.2"
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Initialized": "True", "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}
    assert st["containerStatuses"][0]["ready"] is True and "running" in st["containerStatuses"][0]["state"]
    assert podsim.status_matches(dict(pod, status=st), True)
    pod["metadata"]["annotations"][podsim.ANN_READY] = "false"
    assert not podsim.wants_ready(pod)
    st2 = podsim.desired_status(dict(pod, status=st), "10.244.0.2", "10.0.0.10", False, "2024-01-01T00:01:00Z")
    ready = [c for c in st2["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False" and ready["lastTransitionTime"] == "2024-01-01T00:01:00Z"
    init = [c for c in st2["conditions"] if c["type"] == "Initialized"][0]
    assert init["lastTransitionTime"] == "2024-01-01T00:00:00Z"  # unchanged status keeps its time


def test_podsim_ip_allocator_unique():
    from testbed.podsim import IPAllocator

    ips = IPAllocator()
    got = {ips.get(f"uid{i}") for i in range(600)}
    assert len(got) == 600 and all(ip.startswith("10.244.") for ip in got)
    assert ips.get("uid3") in got
    assert not any(ip.endswith(".0") or ip.endswith(".255") for ip in got)


# ---------------------------------------------------------------- informer resilience (fake API)


class _FakeKube:
    """list() and watch() scripted per call: values to return or exceptions to raise."""

    def __init__(self, lists, watches):
        self.lists, self.watches = list(lists), list(watches)
        self.calls = []

    def list(self, path):
        self.calls.append(("list", path))
        item = self.lists.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def watch(self, path, rv, timeout_s):
        self.calls.append(("watch", rv))
        script = self.watches.pop(0) if self.watches else []
        for ev in script:
            if isinstance(ev, Exception):
                raise ev
            yield ev


def test_informer_relists_after_gone_and_errors():
    import threading

    from testbed.podsim import ApiError, Informer

    def obj(name, rv):
        return {"metadata": {"name": name, "namespace": NS, "resourceVersion": rv}}

    stop = threading.Event()
    replaced, events = [], []
    kube = _FakeKube(
        lists=[([obj("a", "1")], "1"), ConnectionError("apiserver down"), ([obj("a", "5"), obj("b", "6")], "6"),
               ([obj("b", "9")], "9")],
        watches=[
            [{"type": "ADDED", "object": obj("c", "2")}, {"type": "BOOKMARK", "object": obj("", "3")}],  # timeout
            [{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}],  # Gone -> relist (fails once)
            [{"type": "DELETED", "object": obj("a", "7")}, ApiError(500, "boom")],  # error -> backoff, relist
        ],
    )

    def on_replace(items):
        replaced.append(sorted(i["metadata"]["name"] for i in items))
        if len(replaced) == 3:
            stop.set()

    inf = Informer(kube, "things", "/api/v1/things", on_replace, lambda t, o: events.append((t, o["metadata"]["name"])),
                   stop)
    inf.run()  # returns once stop is set
    assert replaced == [["a"], ["a", "b"], ["b"]]
    assert events == [("ADDED", "c"), ("DELETED", "a")]
    watch_rvs = [c[1] for c in kube.calls if c[0] == "watch"]
    assert watch_rvs[:3] == ["1", "3", "6"]  # re-watch from the bookmark, then from the fresh list


def test_podsim_reaps_terminating_pods_only_on_own_or_vanished_nodes():
    import threading

    from testbed.podsim import ApiError, PodSim

    class Kube:
        def __init__(self):
            self.deleted = []

        def get(self, path):
            if path.endswith("/nodes/other-node"):
                return {"metadata": {"name": "other-node"}}
            raise ApiError(404, "not found")

        def delete(self, path, body=None):
            self.deleted.append(path)
            return {}

    def pod(name, node):
        return {"metadata": {"name": name, "namespace": NS, "uid": name, "deletionTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]}}

    kube = Kube()
    sim = PodSim(kube, threading.Event())  # type: ignore[arg-type]
    mine, orphan, foreign = pod("mine", "sim-node"), pod("orphan", "gone-node"), pod("foreign", "other-node")
    assert sim._needs_work(mine) and sim._needs_work(orphan) and not sim._needs_work(foreign)
    for p in (mine, orphan):
        sim._reconcile(p)
    assert kube.deleted == [f"/api/v1/namespaces/{NS}/pods/mine", f"/api/v1/namespaces/{NS}/pods/orphan"]
    passive = PodSim(kube, threading.Event(), bind=False)  # type: ignore[arg-type]
    assert passive._needs_work(mine) and not passive._needs_work(orphan)
    sim.pool.shutdown()
    passive.pool.shutdown()
