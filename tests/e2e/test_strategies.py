"""Deployment strategies end to end (Flagger docs: deployment-strategies.md; flagger.md 3.7):
A/B testing, blue/green, blue/green with mirroring, stepWeights with stepWeightPromotion and
session affinity. Istio through the default operator; A/B and blue/green also on the Gateway API,
selected per Canary with spec.provider (the same operator serves both providers).

What users receive is checked in Prometheus, from the traffic simulator's series:
`sim_route_requests_total{route=<apex>}` counts the requests sent through the apex route per
destination workload, `istio_requests_total` what each workload served.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment, routed
from tests.e2e.test_gatewayapi import gateway, gateway_canary, httproute_weights, metric_templates, watch_release

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"
ISTIO_METRICS = [
    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s"},
    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s"},
]
INSIDER = [{"headers": {"x-canary": {"exact": "insider"}}}]


def _custom(api_client):
    return kubernetes.client.CustomObjectsApi(api_client)


def get_vs(api_client, ns: str, name: str) -> dict | None:
    try:
        return _custom(api_client).get_namespaced_custom_object("networking.istio.io", "v1beta1", ns,
                                                                "virtualservices", name)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def weighted_rule(vs: dict, name: str) -> dict | None:
    for rule in vs["spec"].get("http") or []:
        hosts = {d["destination"]["host"] for d in rule.get("route") or []}
        if hosts == {f"{name}-primary", f"{name}-canary"}:
            return rule
    return None


def vs_weights(api_client, ns: str, name: str) -> tuple[int, int] | None:
    vs = get_vs(api_client, ns, name)
    rule = weighted_rule(vs, name) if vs else None
    if rule is None:
        return None
    w = {d["destination"]["host"]: d.get("weight", 0) for d in rule["route"]}
    return w[f"{name}-primary"], w[f"{name}-canary"]


def with_analysis(body: dict, drop=("maxWeight", "stepWeight"), **analysis) -> dict:
    for key in drop:
        body["spec"]["analysis"].pop(key, None)
    body["spec"]["analysis"].update(analysis)
    return body


def start(api_client, ns: str, operator, body: dict, extra: list[dict] = (), name: str = "podinfo") -> None:
    ops.apply(api_client, deployment(name), ns)
    for obj in extra:
        ops.apply(api_client, obj, ns)
    ops.apply(api_client, body, ns)
    try:
        ops.wait_until(lambda: ops.canary_status(api_client, ns, name).get("phase") == "Initialized", 90,
                       f"{ns}/{name} initialized")
    except TimeoutError:
        print(operator.log_tail(80))
        raise
    ops.patch_deployment(api_client, ns, name, image=IMAGE2)


def route_share(ns: str, route: str, workload: str, window: str = "5s") -> float | None:
    """Share (0..1) of the requests sent through `route` that reached `workload`, lately."""
    sel = f'namespace="{ns}",route="{route}"'
    return ops.prom_value(f'sum(rate(sim_route_requests_total{{{sel},destination_workload="{workload}"}}[{window}]))'
                          f' / sum(rate(sim_route_requests_total{{{sel}}}[{window}]))')


def served_rate(ns: str, workload: str, reporter: str = "destination", window: str = "5s") -> float | None:
    return ops.prom_value(f'sum(rate(istio_requests_total{{reporter="{reporter}",destination_workload_namespace='
                          f'"{ns}",destination_workload="{workload}"}}[{window}]))')


def user_requests_to(ns: str, route: str, workload: str) -> float | None:
    """All requests ever sent through `route` to `workload` (None: never any)."""
    return ops.prom_value(f'sum(sim_route_requests_total{{namespace="{ns}",route="{route}",'
                          f'destination_workload="{workload}"}})')


def primary_image(api_client, ns: str, name: str = "podinfo") -> str:
    dep = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment(f"{name}-primary", ns)
    return dep.spec.template.spec.containers[0].image


def follow(api_client, ns: str, operator, probe, name: str = "podinfo", timeout: float = 150) -> list:
    """Poll until Succeeded/Failed, calling probe(status) on every sample; returns the (phase, weight) seen."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ops.canary_status(api_client, ns, name)
        sample = (st.get("phase"), st.get("canaryWeight", 0))
        if not seen or seen[-1] != sample:
            seen.append(sample)
        probe(st)
        if st.get("phase") in ("Succeeded", "Failed"):
            return seen
        time.sleep(0.25)
    print(operator.log_tail(80))
    pytest.fail(f"{ns}/{name} did not finish; seen {seen}")


# ---- A/B testing -------------------------------------------------------------------------------


# the matched share is ~10 % of the simulated traffic: a 10 s window of it can hold too few
# requests on a loaded machine (no data is a failed check, as in Flagger), so these windows are 30 s
AB_METRICS = [{**m, "interval": "30s"} for m in ISTIO_METRICS]


def test_ab_istio(api_client, namespace, operator):
    body = with_analysis(canary("podinfo", threshold=3, metrics=AB_METRICS), iterations=5, match=INSIDER)
    start(api_client, namespace, operator, body)
    checks = {"matched_rule": False, "canary_served": 0.0, "share": None}

    def probe(st):
        if st.get("phase") != "Progressing" or st.get("iterations", 0) < 3 or checks["canary_served"]:
            return
        vs = get_vs(api_client, namespace, "podinfo")
        first = vs["spec"]["http"][0]
        if first.get("match") == [{"headers": {"x-canary": {"exact": "insider"}}}] and \
                [d.get("weight") for d in first["route"]] == [0, 100]:
            checks["matched_rule"] = True
            assert vs["spec"]["http"][1]["route"] == [{"destination": {"host": "podinfo-primary"}, "weight": 100}]
            checks["canary_served"] = served_rate(namespace, "podinfo") or 0.0
            checks["share"] = route_share(namespace, "podinfo", "podinfo")

    seen = follow(api_client, namespace, operator, probe)
    print("A/B istio:", seen, checks)
    assert seen[-1][0] == "Succeeded", (seen, ops.canary_status(api_client, namespace, "podinfo").get("lastFailure"))
    assert checks["matched_rule"], "the A/B rule never routed the matched requests to the canary"
    assert checks["canary_served"] > 0, checks
    assert checks["share"] is not None and 0.03 < checks["share"] < 0.2, checks  # the header-matched ~10%
    assert primary_image(api_client, namespace) == IMAGE2
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)  # matched users back on the primary


def test_ab_gatewayapi(api_client, namespace, operator):
    body = with_analysis(gateway_canary(namespace, threshold=3), iterations=5, match=INSIDER)
    body["spec"]["provider"] = "gatewayapi:v1"
    metric_templates(api_client, namespace)
    start(api_client, namespace, operator, body, extra=[gateway()])
    checks = {"matched_rule": False, "canary_served": 0.0, "share": None}
    insider = [{"path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"name": "x-canary", "type": "Exact", "value": "insider"}]}]

    def probe(st):
        if st.get("phase") != "Progressing" or st.get("iterations", 0) < 3 or checks["canary_served"]:
            return
        route = _custom(api_client).get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace,
                                                                 "httproutes", "podinfo")
        first = route["spec"]["rules"][0]
        if first["matches"] == insider and [b["weight"] for b in first["backendRefs"]] == [0, 100]:
            checks["matched_rule"] = True
            checks["canary_served"] = served_rate(namespace, "podinfo", reporter="source") or 0.0
            checks["share"] = route_share(namespace, "podinfo", "podinfo")

    seen = follow(api_client, namespace, operator, probe)
    print("A/B gatewayapi:", seen, checks)
    assert seen[-1][0] == "Succeeded", seen
    assert checks["matched_rule"], "the A/B rule never routed the matched requests to the canary"
    assert checks["canary_served"] > 0, checks
    assert checks["share"] is not None and 0.03 < checks["share"] < 0.2, checks
    assert primary_image(api_client, namespace) == IMAGE2
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)
    assert get_vs(api_client, namespace, "podinfo") is None  # the Canary's provider, not the operator's


# ---- blue/green -----------------------------------------------------------------------------


def _bluegreen(api_client, ns, operator, weights, reporter: str):
    """Users get nothing from the canary during the iterations (a tester route feeds the canary
    for the metrics, like Flagger's load tester on <svc>-canary), then everything, then the primary."""
    checks = {"quiet_iterations": 0, "tester_served": 0.0}

    def probe(st):
        if st.get("phase") == "Progressing" and 2 <= st.get("iterations", 0) <= 3:
            if weights(api_client, ns, "podinfo") == (100, 0):
                assert not user_requests_to(ns, "podinfo", "podinfo"), "users reached the canary"
                checks["quiet_iterations"] += 1
                checks["tester_served"] = max(checks["tester_served"], served_rate(ns, "podinfo", reporter) or 0.0)

    routes: list = []

    def probe_routes(st):
        probe(st)
        w = weights(api_client, ns, "podinfo")
        if w is not None and (not routes or routes[-1] != w):
            routes.append(w)

    seen = follow(api_client, ns, operator, probe_routes)
    print("blue/green:", seen, routes, checks)
    assert seen[-1][0] == "Succeeded", seen
    assert checks["quiet_iterations"] > 0 and checks["tester_served"] > 0, checks
    assert routes == [(100, 0), (0, 100), (100, 0)], routes  # no weights in between
    assert user_requests_to(ns, "podinfo", "podinfo")  # the switch did send users to the new version
    assert primary_image(api_client, ns) == IMAGE2


def canary_tester_vs(name: str = "podinfo") -> dict:
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": f"{name}-tester"},
            "spec": {"hosts": [f"{name}-canary"],
                     "http": [{"route": [{"destination": {"host": f"{name}-canary"}}]}]}}


def test_bluegreen_istio(api_client, namespace, operator):
    body = with_analysis(canary("podinfo", threshold=3, metrics=ISTIO_METRICS), iterations=3)
    start(api_client, namespace, operator, body, extra=[canary_tester_vs()])
    _bluegreen(api_client, namespace, operator, vs_weights, "destination")
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    assert "mirror" not in weighted_rule(get_vs(api_client, namespace, "podinfo"), "podinfo")


def test_bluegreen_gatewayapi(api_client, namespace, operator):
    body = with_analysis(gateway_canary(namespace, threshold=3), iterations=3)
    body["spec"]["provider"] = "gatewayapi:v1"
    metric_templates(api_client, namespace)
    tester = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
              "metadata": {"name": "podinfo-tester"},
              "spec": {"parentRefs": [{"name": "gateway"}],
                       "rules": [{"backendRefs": [{"name": "podinfo-canary", "port": 9898}]}]}}
    start(api_client, namespace, operator, body, extra=[gateway(), tester])
    _bluegreen(api_client, namespace, operator, httproute_weights, "source")
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)


def test_bluegreen_mirror_istio(api_client, namespace, operator):
    body = with_analysis(canary("podinfo", threshold=3, metrics=ISTIO_METRICS), iterations=3, mirror=True)
    start(api_client, namespace, operator, body)
    checks = {"mirror_seen": False, "mirrored": None, "weights_during_mirror": set()}

    def probe(st):
        vs = get_vs(api_client, namespace, "podinfo")
        rule = weighted_rule(vs, "podinfo") if vs else None
        if rule and rule.get("mirror") == {"host": "podinfo-canary"} and st.get("phase") == "Progressing":
            checks["mirror_seen"] = True
            checks["weights_during_mirror"].add(tuple(d["weight"] for d in rule["route"]))
            if st.get("iterations", 0) >= 2:
                checks["mirrored"] = ops.prom_value(
                    f'sum(sim_route_mirrored_requests_total{{namespace="{namespace}",route="podinfo",'
                    f'destination_workload="podinfo"}})')

    seen = follow(api_client, namespace, operator, probe)
    print("blue/green mirror:", seen, checks)
    assert seen[-1][0] == "Succeeded", seen
    assert checks["mirror_seen"], "no mirror on the VirtualService during the run"
    assert checks["weights_during_mirror"] == {(100, 0)}, checks  # users stay on the primary while mirrored
    assert checks["mirrored"] and checks["mirrored"] > 0, checks  # the canary received the copies
    # the decision (Succeeded) is written before its effects: the unmirrored route follows it
    rule = ops.wait_until(lambda: (lambda r: r if "mirror" not in r else None)(
        weighted_rule(get_vs(api_client, namespace, "podinfo"), "podinfo")), 10, "the mirror removed")
    assert [d["weight"] for d in rule["route"]] == [100, 0]
    assert primary_image(api_client, namespace) == IMAGE2


# ---- stepWeights and stepWeightPromotion -----------------------------------------------------------


def test_step_weights_with_step_weight_promotion(api_client, namespace, operator):
    body = with_analysis(canary("podinfo", threshold=3, metrics=ISTIO_METRICS), stepWeights=[10, 30, 80],
                         stepWeightPromotion=50)
    start(api_client, namespace, operator, body)
    phases, routes = watch_release(api_client, namespace, "podinfo", operator, vs_weights)
    print("stepWeights:", phases, routes)
    assert phases[-1][0] == "Succeeded", phases
    canary_steps = [c for _, c in routes]
    # up the listed steps, then back to the primary by 50 points (80 -> 30 -> 0)
    assert canary_steps == [0, 10, 30, 80, 30, 0], routes
    assert ("Promoting", 30) in phases, phases
    promoting = [w for p, w in phases if p == "Promoting"]
    assert promoting == [80, 30], phases
    assert primary_image(api_client, namespace) == IMAGE2


# ---- session affinity -------------------------------------------------------------------------


def test_session_affinity_istio(api_client, namespace, operator):
    body = canary("podinfo", threshold=3, max_weight=40, step_weight=20, metrics=ISTIO_METRICS)
    body["spec"]["analysis"]["sessionAffinity"] = {"cookieName": "canary-session", "maxAge": 600, "path": "/"}
    start(api_client, namespace, operator, body)
    cookies: dict[int, str] = {}

    def probe(st):
        vs = get_vs(api_client, namespace, "podinfo")
        rule = weighted_rule(vs, "podinfo") if vs else None
        if not rule or rule["route"][1].get("weight", 0) == 0:
            return
        set_cookie = rule["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
        sticky = vs["spec"]["http"][0]
        assert sticky["route"] == [{"destination": {"host": "podinfo-canary"}, "weight": 100}]
        cookie = set_cookie.split(";")[0]
        assert cookie in sticky["match"][0]["headers"]["cookie"]["regex"]
        assert "headers" not in rule["route"][0]  # no primary cookie asked for
        cookies[rule["route"][1]["weight"]] = set_cookie

    seen = follow(api_client, namespace, operator, probe)
    print("session affinity:", seen, cookies)
    assert seen[-1][0] == "Succeeded", seen
    assert {20, 40} <= set(cookies), cookies
    values = set(cookies.values())
    assert len(values) == 1, cookies  # one cookie for the whole run
    set_cookie = values.pop()
    assert set_cookie.startswith("canary-session=") and set_cookie.endswith("; Max-Age=600; Path=/")
    # after the run: the run's cookie is expired by a rule ahead of the weights
    vs = get_vs(api_client, namespace, "podinfo")
    cookie = set_cookie.split(";")[0]
    assert vs["spec"]["http"][0]["route"] == [{
        "destination": {"host": "podinfo-primary"}, "weight": 100,
        "headers": {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=-1; Path=/"}}}}]
    assert routed(api_client, namespace, "podinfo", (100, 0)) == (100, 0)
    assert primary_image(api_client, namespace) == IMAGE2


def test_session_affinity_gatewayapi(api_client, namespace, operator):
    body = gateway_canary(namespace, threshold=3, max_weight=40, step_weight=20)
    body["spec"]["provider"] = "gatewayapi:v1"
    body["spec"]["analysis"]["sessionAffinity"] = {"cookieName": "canary-session", "maxAge": 600, "path": "/"}
    metric_templates(api_client, namespace)
    start(api_client, namespace, operator, body, extra=[gateway()])
    cookies: dict[int, str] = {}

    def route():
        return _custom(api_client).get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace,
                                                                "httproutes", "podinfo")

    def probe(st):
        rules = route()["spec"]["rules"]
        weighted = [r for r in rules if len(r.get("backendRefs") or []) == 2]
        if not weighted:
            return
        canary_ref = next(b for b in weighted[0]["backendRefs"] if b["name"] == "podinfo-canary")
        if canary_ref.get("weight", 0) == 0:
            return
        (mod,) = [f for f in canary_ref["filters"] if f["type"] == "ResponseHeaderModifier"]
        set_cookie = mod["responseHeaderModifier"]["add"][0]["value"]
        # the sticky rule sends cookie holders to the canary, ahead of the weighted rule
        sticky = rules[0]
        assert [b["name"] for b in sticky["backendRefs"]] == ["podinfo-canary"]
        headers = [h for m in sticky["matches"] for h in m.get("headers") or []]
        assert any(h["name"].lower() == "cookie" and set_cookie.split(";")[0] in h["value"] for h in headers)
        cookies[canary_ref["weight"]] = set_cookie

    seen = follow(api_client, namespace, operator, probe)
    print("session affinity gatewayapi:", seen, cookies)
    assert seen[-1][0] == "Succeeded", seen
    assert {20, 40} <= set(cookies), cookies
    values = set(cookies.values())
    assert len(values) == 1, cookies  # one cookie for the whole run
    assert values.pop().startswith("canary-session=")
    assert httproute_weights(api_client, namespace, "podinfo") == (100, 0)
    assert primary_image(api_client, namespace) == IMAGE2
