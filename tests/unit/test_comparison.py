"""Range queries of compared checks: the same query for the canary and for <target>-primary,
over the check's interval, through a mocked Prometheus HTTP API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from canary.adapters import comparison
from canary.adapters.prometheus import PrometheusError
from canary.models import Canary, MetricTemplate

NOW = 1_800_000_000.0


def canary(metrics: list[dict[str, Any]]) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 1, "stepWeight": 10, "metrics": metrics}},
    })


def matrix(*series: list[tuple[float, str]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"i": str(i)}, "values": [[t, v] for t, v in s]} for i, s in enumerate(series)]}}


def vector(value: str | None) -> dict[str, Any]:
    result = [] if value is None else [{"metric": {}, "value": [NOW, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class FakeProm:
    def __init__(self, instant: str | None = "5", range_status: int = 200, instant_status: int = 200):
        self.instant, self.range_status, self.instant_status = instant, range_status, instant_status
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.seen.append((request.url.path, params))
        if request.url.path.endswith("/query_range"):
            if self.range_status != 200:
                return httpx.Response(self.range_status, json={"status": "error", "errorType": "internal",
                                                              "error": "boom"})
            primary = "primary" in params["query"]
            base = 10.0 if primary else 13.0
            return httpx.Response(200, json=matrix([(NOW - 60 + i, str(base + i % 3)) for i in range(60)]))
        if self.instant_status != 200:
            return httpx.Response(self.instant_status, text="unavailable")
        return httpx.Response(200, json=vector(self.instant))

    def ranges(self) -> list[dict[str, str]]:
        return [p for path, p in self.seen if path.endswith("/query_range")]


async def run(c: Canary, fake: FakeProm, templates: dict[str, Any] | None = None):
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        return await comparison.run_metrics(
            c, "http://prom:9090", lambda ns, name: (templates or {}).get(name), now=NOW,
            retries=0, http=http)


async def test_builtin_metric_is_sampled_for_canary_and_primary():
    fake = FakeProm()
    c = canary([{"name": "request-duration", "interval": "1m", "compare": {"tolerance": 10}}])
    (result,) = await run(c, fake)
    queries = sorted(p["query"] for p in fake.ranges())
    assert len(queries) == 2
    assert 'destination_workload=~"podinfo"' in queries[0]
    assert 'destination_workload=~"podinfo-primary"' in queries[1]
    for p in fake.ranges():
        assert float(p["start"]) == NOW - 60 and float(p["end"]) == NOW and p["step"] == "1"
    assert len(result.canary_samples) == 60 and len(result.primary_samples) == 60
    assert result.canary_samples[0] == (NOW - 60, 13.0) and result.primary_samples[0] == (NOW - 60, 10.0)
    assert result.value == 5.0 and not result.error


async def test_metric_template_is_rendered_for_both_targets():
    fake = FakeProm()
    tpl = MetricTemplate.model_validate({
        "metadata": {"name": "lat", "namespace": "test"},
        "spec": {"provider": {"type": "prometheus", "address": "http://prom:9090"},
                 "query": 'max(lat{app="{{ target }}"}[{{ interval }}])'}})
    c = canary([{"name": "lat", "templateRef": {"name": "lat"}, "interval": "5m", "compare": {}}])
    (result,) = await run(c, fake, {"lat": tpl})
    assert sorted(p["query"] for p in fake.ranges()) == ['max(lat{app="podinfo"}[5m])',
                                                         'max(lat{app="podinfo-primary"}[5m])']
    assert {p["step"] for p in fake.ranges()} == {"5"}  # 5m / 60
    assert result.canary_samples and result.primary_samples


async def test_a_metric_without_compare_is_not_sampled():
    fake = FakeProm()
    (result,) = await run(canary([{"name": "request-duration", "thresholdRange": {"max": 500}}]), fake)
    assert fake.ranges() == [] and result.canary_samples is None and result.ok


async def test_range_query_failure_is_an_error_not_a_failure_of_the_canary():
    fake = FakeProm(range_status=503)
    (result,) = await run(canary([{"name": "request-duration", "compare": {}}]), fake)
    assert result.error and not result.ok and "range query" in result.message and "boom" in result.message


async def test_instant_query_failure_is_an_error_and_skips_the_range_queries():
    fake = FakeProm(instant_status=503)
    (result,) = await run(canary([{"name": "request-duration", "compare": {}}]), fake)
    assert result.error and result.value is None and fake.ranges() == []


async def test_no_data_is_not_an_error():
    fake = FakeProm(instant=None)
    (result,) = await run(canary([{"name": "request-duration", "compare": {}}]), fake)
    assert result.value is None and not result.error and comparison.is_no_data(result)
    assert result.canary_samples is not None  # still sampled: the judge decides NoData on the series


def test_parse_range_response():
    assert comparison.parse_range_response(200, json.dumps(matrix())) == ()
    body = json.dumps(matrix([(1, "1")], [(1, "2"), (2, "NaN")]))
    got = comparison.parse_range_response(200, body)
    assert got[0] == (1.0, 2.0) and got[1][0] == 2.0 and got[1][1] != got[1][1]  # last series, NaN kept
    long = json.dumps(matrix([(i, "1") for i in range(50)]))
    assert len(comparison.parse_range_response(200, long, limit=10)) == 10
    for status, bad in [(200, "not json"), (200, json.dumps(vector("1"))), (400, json.dumps({"status": "error"})),
                        (200, json.dumps(matrix([(1, "x")]))),
                        (200, json.dumps({"status": "success", "data": {"resultType": "matrix",
                                                                        "result": [{"values": [[1]]}]}}))]:
        with pytest.raises(PrometheusError):
            comparison.parse_range_response(status, bad)


def test_with_target_copies_models_and_dicts():
    c = canary([])
    other = comparison.with_target(c, "podinfo-primary")
    assert other.spec.target_ref.name == "podinfo-primary" and c.spec.target_ref.name == "podinfo"
    doc = {"spec": {"targetRef": {"name": "a"}}}
    assert comparison.with_target(doc, "a-primary")["spec"]["targetRef"]["name"] == "a-primary"
    assert doc["spec"]["targetRef"]["name"] == "a"


def test_window_covers_the_interval_with_about_sixty_steps():
    assert comparison.window({"interval": "2m"}, NOW) == (NOW - 120, NOW, 2.0)
    assert comparison.window({"interval": "10s"}, NOW) == (NOW - 10, NOW, 1.0)
    assert comparison.window({}, NOW) == (NOW - 60, NOW, 1.0)


async def test_a_compared_metric_without_a_bound_has_no_fixed_bound():
    # Flagger's default max of 0 applies to uncompared metrics only
    fake = FakeProm(instant="5")
    (compared_only, bounded) = await run(canary([
        {"name": "request-duration", "compare": {}},
        {"name": "lat", "query": "lat{app=\"{{ target }}\"}", "compare": {}, "thresholdRange": {"max": 1}}]), fake)
    assert compared_only.ok and compared_only.max is None and compared_only.min is None
    assert not bounded.ok and bounded.max == 1
