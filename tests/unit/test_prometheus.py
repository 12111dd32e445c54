"""Metric checks against a fake Prometheus HTTP API served locally (real HTTP, no mocks)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from canary.adapters.prometheus import (
    PrometheusClient,
    PrometheusError,
    evaluate,
    parse_query_response,
    run_metrics,
)
from canary.models import Canary, MetricTemplate

# The built-in PromQL exactly as Flagger ships it, with namespace=test, target=podinfo and
# interval=30s substituted (written out by hand on purpose, not derived from the module).
ISTIO_SUCCESS_RATE_30S = (
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",'
    'destination_workload=~"podinfo",response_code!~"5.*"}[30s])) / '
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",'
    'destination_workload=~"podinfo"}[30s])) * 100'
)
ISTIO_DURATION_1M = (
    "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
    'reporter="destination",destination_workload_namespace="test",'
    'destination_workload=~"podinfo"}[1m])) by (le))'
)
HTTP_SUCCESS_RATE_1M = (
    'sum(rate(http_request_duration_seconds_count{kubernetes_namespace="test",'
    'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}[1m])) / '
    'sum(rate(http_request_duration_seconds_count{kubernetes_namespace="test",'
    'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[1m])) * 100'
)
HTTP_DURATION_1M = (
    'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="test",'
    'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[1m])) by (le))'
)


def vector(*values: str | float) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"i": str(i)}, "value": [1700000000.0, str(v)]} for i, v in enumerate(values)],
        },
    }


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: vector(1))
    delay: float = 0.0


@dataclass
class FakePrometheus:
    url: str
    replies: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    default: Reply = field(default_factory=Reply)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (path, query, headers)

    def answer(self, query: str, *replies: Reply) -> None:
        self.replies[query] = list(replies) if len(replies) > 1 else replies[0]

    def queries(self) -> list[str]:
        return [q for _, q, _ in self.seen]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def prom() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus(url="")

    async def handle(request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        fake.seen.append((request.path, query, dict(request.headers)))
        reply = fake.replies.get(query, fake.default)
        if isinstance(reply, list):
            reply = reply.pop(0) if len(reply) > 1 else reply[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return web.Response(status=reply.status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def canary(metrics: list[dict[str, Any]], **spec: Any) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                             "metrics": metrics},
                **spec,
            },
        }
    )


def no_templates(namespace: str, name: str) -> None:
    return None


FAST = {"backoff": 0.01}


# ---- builtin metrics --------------------------------------------------------------------------


async def test_istio_builtins_exact_promql_and_thresholds(prom: FakePrometheus) -> None:
    prom.answer(ISTIO_SUCCESS_RATE_30S, Reply(body=vector(99.5)))
    prom.answer(ISTIO_DURATION_1M, Reply(body=vector(612.5)))
    c = canary(
        [
            {"name": "request-success-rate", "threshold": 99, "interval": "30s"},
            {"name": "request-duration", "thresholdRange": {"max": 500}},
        ],
        provider="istio",
    )
    sr, dur = await run_metrics(c, prom.url, no_templates, **FAST)
    assert sorted(prom.queries()) == sorted([ISTIO_SUCCESS_RATE_30S, ISTIO_DURATION_1M])
    assert all(path == "/api/v1/query" for path, _, _ in prom.seen)
    assert sr.query == ISTIO_SUCCESS_RATE_30S
    assert (sr.ok, sr.value, sr.min, sr.max) == (True, 99.5, 99.0, None)
    assert dur.query == ISTIO_DURATION_1M
    assert (dur.ok, dur.value, dur.min, dur.max) == (False, 612.5, None, 500.0)
    assert "request-duration" in dur.message and "612.50ms > max 500ms" in dur.message


async def test_success_rate_below_threshold_fails(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector(97.25))
    (sr,) = await run_metrics(canary([{"name": "request-success-rate", "threshold": 99}]), prom.url, no_templates)
    assert not sr.ok and sr.value == 97.25 and sr.min == 99
    assert "97.25% < min 99%" in sr.message


async def test_default_mesh_provider_is_istio(prom: FakePrometheus) -> None:
    (dur,) = await run_metrics(canary([{"name": "request-duration", "threshold": 500}]), prom.url, no_templates)
    assert dur.query == ISTIO_DURATION_1M and dur.max == 500


@pytest.mark.parametrize("provider", ["gatewayapi:v1", "gatewayapi:v1beta1", "kubernetes"])
async def test_http_observer_builtins_and_seconds_to_ms(prom: FakePrometheus, provider: str) -> None:
    prom.answer(HTTP_SUCCESS_RATE_1M, Reply(body=vector(100)))
    prom.answer(HTTP_DURATION_1M, Reply(body=vector(0.25)))  # seconds
    c = canary(
        [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}},
            {"name": "request-duration", "thresholdRange": {"max": 200}},
        ],
        provider=provider,
    )
    sr, dur = await run_metrics(c, prom.url, no_templates)
    assert sr.query == HTTP_SUCCESS_RATE_1M and sr.ok
    assert dur.query == HTTP_DURATION_1M
    assert dur.value == 250.0 and not dur.ok


async def test_mesh_provider_argument_and_service_target(prom: FakePrometheus) -> None:
    (sr,) = await run_metrics(canary([{"name": "request-success-rate"}]), prom.url, no_templates,
                              mesh_provider="gatewayapi:v1")
    assert sr.query == HTTP_SUCCESS_RATE_1M
    # a Service target falls back to the Istio observer, as in Flagger
    svc = canary([{"name": "request-success-rate"}], provider="kubernetes",
                 targetRef={"apiVersion": "v1", "kind": "Service", "name": "podinfo"})
    (sr,) = await run_metrics(svc, prom.url, no_templates)
    assert sr.query.startswith("sum(rate(istio_requests_total{")


async def test_spec_metrics_server_overrides_default(prom: FakePrometheus) -> None:
    c = canary([{"name": "request-success-rate"}], metricsServer=prom.url)
    (sr,) = await run_metrics(c, "http://127.0.0.1:1", no_templates)
    assert sr.ok and len(prom.seen) == 1


# ---- no values, errors, retries, timeouts ---------------------------------------------------


async def test_no_values_is_a_failed_check_naming_metric_and_query(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector())
    (sr,) = await run_metrics(canary([{"name": "request-success-rate", "threshold": 99}]), prom.url, no_templates)
    assert not sr.ok and sr.value is None
    assert "request-success-rate" in sr.message
    assert "no values" in sr.message
    assert sr.query in sr.message


async def test_nan_is_no_values(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector("NaN"))
    (sr,) = await run_metrics(canary([{"name": "request-success-rate"}]), prom.url, no_templates)
    assert not sr.ok and sr.value is None and "no values" in sr.message


async def test_last_series_wins(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector(1, 2, 42))
    client = PrometheusClient(prom.url)
    assert await client.query("anything") == 42.0


async def test_bad_query_fails_without_retry(prom: FakePrometheus) -> None:
    error = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    prom.default = Reply(status=400, body=error)
    c = canary([{"name": "broken", "query": "sum(x})", "thresholdRange": {"max": 1}}])
    (m,) = await run_metrics(c, prom.url, no_templates, **FAST)
    assert not m.ok and m.value is None
    assert "broken" in m.message and "sum(x})" in m.message
    assert "bad_data" in m.message and "parse error" in m.message
    assert len(prom.seen) == 1


async def test_5xx_is_retried_then_reported(prom: FakePrometheus) -> None:
    prom.default = Reply(status=503, body="overloaded")
    c = canary([{"name": "request-success-rate"}])
    (m,) = await run_metrics(c, prom.url, no_templates, retries=2, **FAST)
    assert len(prom.seen) == 3
    assert not m.ok and "503" in m.message and "overloaded" in m.message


async def test_5xx_then_success(prom: FakePrometheus) -> None:
    prom.answer("up", Reply(status=502, body="bad gateway"), Reply(body=vector(1)))
    assert await PrometheusClient(prom.url, **FAST).query("up") == 1.0
    assert len(prom.seen) == 2


async def test_timeout_is_reported_and_not_retried(prom: FakePrometheus) -> None:
    prom.default = Reply(delay=2.0)
    started = time.monotonic()
    (m,) = await run_metrics(canary([{"name": "request-success-rate"}]), prom.url, no_templates,
                             timeout=0.2, **FAST)
    assert time.monotonic() - started < 1.5
    assert not m.ok and m.value is None
    assert "0.2s" in m.message and "request-success-rate" in m.message
    assert len(prom.seen) == 1


async def test_connection_refused_is_retried_and_reported() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    (m,) = await run_metrics(canary([{"name": "request-success-rate"}]), url, no_templates, **FAST)
    assert time.monotonic() - started < 2
    assert not m.ok and "cannot reach" in m.message and "ConnectError" in m.message


async def test_is_online(prom: FakePrometheus) -> None:
    prom.answer("vector(1)", Reply(body=vector(1)))
    assert await PrometheusClient(prom.url).is_online()
    assert prom.queries() == ["vector(1)"]
    dead = PrometheusClient(f"http://127.0.0.1:{_free_port()}", retries=0)
    assert not await dead.is_online()
    assert "cannot reach" in (await dead.check_online() or "")


async def test_address_path_prefix_is_kept(prom: FakePrometheus) -> None:
    await PrometheusClient(prom.url + "/prometheus/").query("up")
    assert prom.seen[0][0] == "/prometheus/api/v1/query"


def test_invalid_address() -> None:
    with pytest.raises(PrometheusError, match="invalid Prometheus address"):
        PrometheusClient("prometheus:9090")


# ---- response parsing and threshold evaluation ---------------------------------------------


def test_parse_scalar_and_reject_matrix() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3.5"]}}
    assert parse_query_response(200, json.dumps(scalar)) == 3.5
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(PrometheusError, match="matrix"):
        parse_query_response(200, json.dumps(matrix))
    with pytest.raises(PrometheusError, match="not a Prometheus API response"):
        parse_query_response(502, "<html>bad gateway</html>")


@pytest.mark.parametrize(
    ("value", "lo", "hi", "ok"),
    [
        (99.0, 99.0, None, True),  # bounds are inclusive
        (98.99, 99.0, None, False),
        (500.0, None, 500.0, True),
        (500.01, None, 500.0, False),
        (5.0, 1.0, 10.0, True),
        (0.5, 1.0, 10.0, False),
        (11.0, 1.0, 10.0, False),
        (-3.0, None, None, True),
    ],
)
def test_evaluate(value: float, lo: float | None, hi: float | None, ok: bool) -> None:
    result = evaluate("m", "q", value, lo, hi)
    assert result.ok is ok and result.value == value and (result.min, result.max) == (lo, hi)


def test_evaluate_no_value() -> None:
    result = evaluate("m", "up == 2", None, 1.0, None)
    assert not result.ok and result.value is None and "no values" in result.message and "up == 2" in result.message


async def test_threshold_semantics_per_kind(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector(50))
    metrics = [
        {"name": "request-success-rate", "threshold": 60},  # min -> 50 fails
        {"name": "request-duration", "threshold": 60},  # max -> 50 passes
        {"name": "inline", "query": "x", "threshold": 40},  # max -> 50 fails
        # Flagger: the deprecated threshold is a max defaulting to 0; 0, negative or no bound at all
        # never means "always pass"
        {"name": "inline-zero", "query": "y", "threshold": 0},
        {"name": "inline-negative", "query": "y", "threshold": -5},
        {"name": "inline-unbounded", "query": "y"},
        {"name": "range-wins", "query": "z", "threshold": 1, "thresholdRange": {"min": 10, "max": 90}},
    ]
    results = await run_metrics(canary(metrics), prom.url, no_templates)
    assert [r.name for r in results] == [m["name"] for m in metrics]
    assert [r.ok for r in results] == [False, True, False, False, False, False, True]
    assert [(r.min, r.max) for r in results] == [(60, None), (None, 60), (None, 40), (None, 0), (None, -5),
                                                 (None, 0), (10, 90)]


# ---- templates --------------------------------------------------------------------------------


def template(address: str | None, query: str, **provider: Any) -> MetricTemplate:
    spec_provider = {"type": "prometheus", **provider}
    if address is not None:
        spec_provider["address"] = address
    return MetricTemplate.model_validate(
        {"metadata": {"name": "tpl", "namespace": "test"}, "spec": {"provider": spec_provider, "query": query}}
    )


async def test_template_rendered_with_variables_and_default_interval(prom: FakePrometheus) -> None:
    lookups: list[tuple[str, str]] = []
    tpl = template(prom.url, '100 - sum(rate(x{reporter="{{ variables.reporter }}",\n'
                             '  ns="{{ namespace }}", w=~"{{ target }}"}[{{ interval }}]))')

    def get_template(namespace: str, name: str) -> MetricTemplate:
        lookups.append((namespace, name))
        return tpl

    prom.default = Reply(body=vector(0.5))
    c = canary([{"name": "error-rate", "templateRef": {"name": "tpl"},
                 "templateVariables": {"reporter": "source"}, "thresholdRange": {"max": 1}}])
    (m,) = await run_metrics(c, "http://127.0.0.1:1", get_template)
    assert lookups == [("test", "tpl")]
    assert m.query == '100 - sum(rate(x{reporter="source", ns="test", w=~"podinfo"}[1m]))'
    assert prom.queries() == [m.query]
    assert m.ok and m.value == 0.5 and m.max == 1


async def test_template_threshold_is_max_and_default_address(prom: FakePrometheus) -> None:
    prom.default = Reply(body=vector(7))
    c = canary([{"name": "t", "templateRef": {"name": "tpl", "namespace": "shared"}, "threshold": 5,
                 "interval": "2m"}])

    async def get_template(namespace: str, name: str) -> MetricTemplate | None:  # async lookups work
        return template(None, "x[{{ interval }}]") if (namespace, name) == ("shared", "tpl") else None

    (m,) = await run_metrics(c, prom.url, get_template)
    assert m.query == "x[2m]" and m.max == 5 and not m.ok and "7.00 > max 5" in m.message


async def test_template_headers_and_bearer_token(prom: FakePrometheus) -> None:
    tpl = template(prom.url, "up", headers={"X-Scope-OrgID": ["tenant-a"]}, secretRef={"name": "prom-auth"})
    secrets = {("test", "prom-auth"): {"token": b"s3cret"}}
    c = canary([{"name": "t", "templateRef": {"name": "tpl"}, "thresholdRange": {"max": 5}}])
    (m,) = await run_metrics(c, "", lambda ns, n: tpl, secrets)
    assert m.ok, m.message
    headers = prom.seen[0][2]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Scope-OrgID"] == "tenant-a"


async def test_template_basic_auth_and_secret_callable(prom: FakePrometheus) -> None:
    tpl = template(prom.url, "up", secretRef={"name": "basic"})

    def secrets(namespace: str, name: str) -> dict[str, str] | None:
        return {"username": "bob", "password": "pw"} if (namespace, name) == ("test", "basic") else None

    (m,) = await run_metrics(canary([{"name": "t", "templateRef": {"name": "tpl"}, "thresholdRange": {"max": 5}}]),
                             "", lambda ns, n: tpl, secrets)
    assert m.ok
    assert prom.seen[0][2]["Authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode()


@pytest.mark.parametrize(
    ("get_template", "secrets", "fragment"),
    [
        (lambda ns, n: None, None, "MetricTemplate test/tpl not found"),
        (lambda ns, n: template("http://x", "up", secretRef={"name": "s"}), {}, "Secret test/s"),
        (lambda ns, n: template("http://x", "up", secretRef={"name": "s"}), {("test", "s"): {"other": "1"}},
         "neither 'token'"),
        (lambda ns, n: template("http://x", "up", type="datadog"), None, "'datadog' is not supported"),
        (lambda ns, n: template("http://x", "x{a='{{ variables.zone }}'}"), None, "'zone'"),
    ],
)
async def test_template_problems_are_failed_results(
    get_template: Callable[[str, str], Any], secrets: Any, fragment: str
) -> None:
    (m,) = await run_metrics(canary([{"name": "t", "templateRef": {"name": "tpl"}}]), "", get_template, secrets)
    assert not m.ok and m.value is None
    assert m.message.startswith("metric t: ") and fragment in m.message


async def test_broken_lookup_callable_gives_failed_result() -> None:
    def boom(namespace: str, name: str) -> None:
        raise RuntimeError("index not ready")

    (m,) = await run_metrics(canary([{"name": "t", "templateRef": {"name": "tpl"}}]), "", boom)
    assert not m.ok and "index not ready" in m.message


async def test_unknown_metric_without_query_fails(prom: FakePrometheus) -> None:
    (m,) = await run_metrics(canary([{"name": "whatever"}]), prom.url, no_templates)
    assert not m.ok and "neither templateRef nor query" in m.message
    assert prom.seen == []


async def test_inline_query_is_rendered(prom: FakePrometheus) -> None:
    c = canary([{"name": "inline", "query": 'sum(x{ns="{{ namespace }}"}[{{ interval }}])', "interval": "5m"}])
    (m,) = await run_metrics(c, prom.url, no_templates)
    assert m.query == 'sum(x{ns="test"}[5m])' and prom.queries() == [m.query]


async def test_metrics_run_concurrently_and_keep_spec_order(prom: FakePrometheus) -> None:
    prom.answer("slow", Reply(body=vector(1), delay=0.5))
    prom.answer("fast", Reply(body=vector(2), delay=0.0))
    prom.answer("mid", Reply(body=vector(3), delay=0.5))
    c = canary([{"name": n, "query": n} for n in ("slow", "fast", "mid")])
    started = time.monotonic()
    results = await run_metrics(c, prom.url, no_templates)
    elapsed = time.monotonic() - started
    assert [r.name for r in results] == ["slow", "fast", "mid"]
    assert [r.value for r in results] == [1, 2, 3]
    assert elapsed < 0.9, elapsed  # sequential would take >= 1.0s


async def test_no_metrics_and_dict_canary(prom: FakePrometheus) -> None:
    assert await run_metrics(canary([]), prom.url, no_templates) == ()
    plain = {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"provider": "istio", "targetRef": {"kind": "Deployment", "name": "podinfo"},
                 "analysis": {"metrics": [{"name": "request-duration", "thresholdRange": {"max": 1000}}]}},
    }
    (m,) = await run_metrics(plain, prom.url, no_templates)
    assert m.query == ISTIO_DURATION_1M


async def test_credentials_in_the_address_never_reach_a_message() -> None:
    import socket

    from canary.adapters.prometheus import PrometheusClient, PrometheusError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PrometheusClient(f"http://alice:s3cret@127.0.0.1:{port}/prom?token=t0ken", retries=0)
    with pytest.raises(PrometheusError) as err:
        await client.query("up")
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value) and "t0ken" not in str(err.value)
    assert f"http://127.0.0.1:{port}/prom" in str(err.value)
    assert "s3cret" not in client.address


def test_remote_error_text_is_capped_and_cleaned() -> None:
    from canary.adapters.prometheus import PrometheusError, parse_query_response

    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "\x1b]52;c;ZXZpbA==\x07" + "e" * 1000})
    with pytest.raises(PrometheusError) as err:
        parse_query_response(400, body)
    assert "\x1b" not in str(err.value) and "\x07" not in str(err.value) and len(str(err.value)) < 260
