"""The metric-provider seam (canary/adapters/metrics): one interface, a factory keyed by a
MetricTemplate's provider.type, and the checks and judged range queries going through it."""

from __future__ import annotations

from typing import Any

import pytest

from canary.adapters import comparison, metrics
from canary.adapters.metrics import PrometheusClient, UnsupportedProvider, new_provider, unsupported
from canary.adapters.prometheus import run_metrics
from canary.models import Canary, MetricTemplate


def canary(metrics_: list[dict[str, Any]]) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                              "metrics": metrics_}}})


def template(ptype: str, query: str = "avg:errors{*}") -> MetricTemplate:
    return MetricTemplate.model_validate({
        "metadata": {"name": "tpl", "namespace": "test"},
        "spec": {"provider": {"type": ptype, "address": "http://metrics.example:8080"}, "query": query}})


class FakeProvider:
    """A provider as a new module would add it: the interface, nothing else."""

    made: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, address: str, **options: Any) -> None:
        self.address = address
        FakeProvider.made.append((address, options))
        self.queries: list[str] = []

    async def query(self, q: str) -> float | None:
        self.queries.append(q)
        return 0.25

    async def query_range(self, q: str, start: float, end: float, step: float) -> tuple[tuple[float, float], ...]:
        return ((start, 0.25), (end, 0.5))

    async def check_online(self) -> str | None:
        return None


def test_the_factory_gives_prometheus_by_type_default_and_for_types_flagger_does_not_know() -> None:
    for ptype in ("prometheus", None, "", "graphana"):
        assert isinstance(new_provider(ptype, "http://prom:9090"), PrometheusClient), ptype


@pytest.mark.parametrize("ptype", sorted(metrics.FLAGGER_ONLY_TYPES))
def test_a_type_without_a_client_here_is_refused_by_name(ptype: str) -> None:
    assert unsupported(ptype) == f"provider type {ptype!r} is not supported (only prometheus)"
    with pytest.raises(UnsupportedProvider, match=repr(ptype)):
        new_provider(ptype, "http://x")


async def test_a_check_of_an_unsupported_type_fails_with_the_type_and_queries_nothing() -> None:
    (m,) = await run_metrics(canary([{"name": "errors", "templateRef": {"name": "tpl"}}]), "",
                             lambda ns, n: template("datadog"))
    assert not m.ok and m.value is None
    assert m.message == ("metric errors: MetricTemplate test/tpl: provider type 'datadog' is not supported "
                         "(only prometheus)")
    assert m.query == "avg:errors{*}"


async def test_a_registered_provider_runs_the_checks_of_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(metrics.PROVIDERS, "datadog", FakeProvider)
    FakeProvider.made.clear()
    (m,) = await run_metrics(canary([{"name": "errors", "templateRef": {"name": "tpl"},
                                      "thresholdRange": {"max": 1}}]), "", lambda ns, n: template("datadog"))
    assert m.ok and m.value == 0.25 and m.query == "avg:errors{*}"
    assert [address for address, _ in FakeProvider.made] == ["http://metrics.example:8080"]


async def test_the_judged_range_queries_go_through_the_same_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(metrics.PROVIDERS, "datadog", FakeProvider)
    c = canary([{"name": "errors", "templateRef": {"name": "tpl"}, "compare": {}}])
    (m,) = await comparison.run_metrics(c, "", lambda ns, n: template("datadog"), now=1000.0)
    assert m.canary_samples == ((940.0, 0.25), (1000.0, 0.5))
    assert m.primary_samples == ((940.0, 0.25), (1000.0, 0.5))


async def test_a_looked_up_template_that_is_no_metric_template_is_a_failed_check() -> None:
    broken = {"metadata": {"name": "tpl"}, "spec": {"provider": {"type": "prometheus"}}}  # no query
    (m,) = await run_metrics(canary([{"name": "errors", "templateRef": {"name": "tpl"}}]), "http://prom:9090",
                             lambda ns, n: broken)
    assert not m.ok and m.value is None
    assert m.message.startswith("metric errors: MetricTemplate test/tpl is not a valid MetricTemplate: spec.query")
