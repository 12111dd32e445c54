"""The Prometheus adapter against the real testbed Prometheus (it scrapes itself)."""

from __future__ import annotations

import time

import httpx
import pytest

from canary.adapters.prometheus import PrometheusClient, PrometheusError, run_metrics
from canary.models import Canary, MetricTemplate
from testbed import cluster

PROMETHEUS = cluster.PROM_URL  # the testbed's (CANARY_TESTBED_PORT_OFFSET moves it)


def _ready() -> bool:
    try:
        return httpx.get(f"{PROMETHEUS}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


pytestmark = pytest.mark.testbed


def _scraped_itself() -> bool:
    try:
        got = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": 'sum(rate(prometheus_http_requests_total[1m]))'}, timeout=2.0)
        return bool(got.json()["data"]["result"])
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@pytest.fixture(autouse=True)
def _prometheus_up(testbed):
    assert _ready(), f"testbed Prometheus not reachable at {PROMETHEUS}"
    # a testbed started for this file alone: it may not have scraped itself twice yet (a rate)
    deadline = time.monotonic() + 30
    while not _scraped_itself() and time.monotonic() < deadline:
        time.sleep(0.5)


# A namespace no simulator reports, so that the builtin queries have no values.
EMPTY_NAMESPACE = "canary-operator-no-such-namespace"


def canary(metrics: list[dict], namespace: str = EMPTY_NAMESPACE) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": namespace},
            "spec": {
                "provider": "istio",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "10s", "threshold": 2, "iterations": 1, "metrics": metrics},
            },
        }
    )


async def test_vector_one_and_is_online() -> None:
    client = PrometheusClient(PROMETHEUS)
    assert await client.query("vector(1)") == 1.0
    assert await client.is_online()


async def test_real_metric() -> None:
    client = PrometheusClient(PROMETHEUS)
    # Prometheus scrapes itself, so its own target is up.
    assert await client.query('up{job="prometheus"}') == 1.0
    total = await client.query("sum(prometheus_http_requests_total)")
    assert total is not None and total > 0


async def test_metrics_against_live_prometheus() -> None:
    template = MetricTemplate.model_validate(
        {
            "metadata": {"name": "requests", "namespace": "test"},
            "spec": {
                "provider": {"type": "prometheus", "address": PROMETHEUS},
                "query": 'sum(rate(prometheus_http_requests_total{handler=~"{{ variables.handler }}"}'
                "[{{ interval }}])) >= 0",
            },
        }
    )
    c = canary(
        [
            {"name": "up", "query": 'min(up{job="prometheus"})', "thresholdRange": {"min": 1}},
            {"name": "rate", "templateRef": {"name": "requests"}, "templateVariables": {"handler": ".*"},
             "thresholdRange": {"min": 0}},
            # nothing reports this namespace: the builtin has no values
            {"name": "request-success-rate", "threshold": 99},
            {"name": "syntax", "query": "sum(rate(up[1m]) by", "threshold": 1},
        ]
    )
    up, rate, builtin, syntax = await run_metrics(c, PROMETHEUS, lambda ns, name: template)
    assert up.ok and up.value == 1.0, up.message
    assert rate.ok and rate.value is not None and rate.query.endswith("[1m])) >= 0"), rate.message
    assert not builtin.ok and builtin.value is None and "no values" in builtin.message
    assert f'destination_workload_namespace="{EMPTY_NAMESPACE}"' in builtin.message
    assert not syntax.ok and syntax.value is None
    assert "bad_data" in syntax.message and "parse error" in syntax.message
    assert "sum(rate(up[1m]) by" in syntax.message


async def test_no_values_and_syntax_error_from_client() -> None:
    client = PrometheusClient(PROMETHEUS)
    assert await client.query('up{job="no-such-job-anywhere"}') is None
    with pytest.raises(PrometheusError, match="bad_data"):
        await client.query("sum(")
