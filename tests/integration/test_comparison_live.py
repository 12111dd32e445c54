"""Range queries of compared checks against the testbed's real Prometheus (it scrapes itself)."""

from __future__ import annotations

import time

import httpx
import pytest

from canary.adapters import comparison
from canary.judge import Criteria, Series, Verdict, judge
from canary.models import Canary, MetricTemplate

pytestmark = pytest.mark.testbed


@pytest.fixture
def prom_url(testbed) -> str:
    from testbed import cluster

    assert httpx.get(f"{cluster.PROM_URL}/-/ready", timeout=2.0).status_code == 200
    # the comparison needs a minute of Prometheus's own samples
    deadline = time.time() + 30
    while time.time() < deadline:
        r = httpx.get(f"{cluster.PROM_URL}/api/v1/query_range",
                      params={"query": 'up{job="prometheus"}', "start": time.time() - 20, "end": time.time(),
                              "step": 1}).json()
        if r["data"]["result"] and len(r["data"]["result"][0]["values"]) >= 10:
            break
        time.sleep(1)
    return cluster.PROM_URL


def canary(metrics: list[dict]) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "app", "namespace": "judge-live"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 1, "metrics": metrics}},
    })


def template(url: str, query: str) -> MetricTemplate:
    return MetricTemplate.model_validate({"metadata": {"name": "t", "namespace": "judge-live"},
                                          "spec": {"provider": {"type": "prometheus", "address": url},
                                                   "query": query}})


async def test_both_targets_are_sampled_over_the_interval(prom_url):
    # the matcher renders the target but selects Prometheus's own `up` for both targets
    tpl = template(prom_url, 'up{job="prometheus", workload!="{{ target }}"}')
    c = canary([{"name": "up", "templateRef": {"name": "t"}, "interval": "20s",
                 "compare": {"minSamples": 5}}])
    now = time.time()
    (result,) = await comparison.run_metrics(c, prom_url, lambda ns, n: tpl, now=now)
    assert not result.error, result.message
    for samples in (result.canary_samples, result.primary_samples):
        assert 10 <= len(samples) <= 21
        times = [t for t, _ in samples]
        assert times == sorted(times) and now - 20.5 <= times[0] and times[-1] <= now + 0.5
        assert {v for _, v in samples} == {1.0}
    j = judge(Series.of(result.canary_samples), Series.of(result.primary_samples), Criteria(min_samples=5))
    assert j.verdict is Verdict.PASS and j.test == "rate"


async def test_bad_promql_is_an_error(prom_url):
    tpl = template(prom_url, 'up{job="prometheus"')
    c = canary([{"name": "bad", "templateRef": {"name": "t"}, "compare": {}}])
    (result,) = await comparison.run_metrics(c, prom_url, lambda ns, n: tpl, now=time.time(), retries=0)
    assert result.error and not result.ok and "bad_data" in result.message


async def test_unreachable_prometheus_is_an_error(prom_url):
    tpl = template("http://127.0.0.1:9", 'up{job="prometheus"}')
    c = canary([{"name": "down", "templateRef": {"name": "t"}, "compare": {}}])
    (result,) = await comparison.run_metrics(c, prom_url, lambda ns, n: tpl, now=time.time(), retries=0)
    assert result.error and not result.ok and "cannot reach" in result.message
