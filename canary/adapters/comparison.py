"""Samples for compared checks (``metrics[].compare``): the check's query rendered for the
canary's target and for ``<target>-primary``, each sampled with a range query over the check's
``interval`` ending now, through the check's metric provider (canary/adapters/metrics). The judging itself is pure and happens in the engine
(canary.judge); this module only fetches.

:func:`run_metrics` wraps :func:`canary.adapters.prometheus.run_metrics`: the instant query
of every metric runs as before (its value is shown, and a fixed ``thresholdRange`` still
applies beside the comparison), then the compared metrics get their two series, and every
result says whether it is an error (the query could not run) or a lack of data.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import replace
from typing import Any

import httpx

from canary.adapters import prometheus as prom
from canary.adapters.metrics import MetricProvider, ProviderError, Samples
from canary.adapters.metrics.prometheus import parse_range_response
from canary.duration import parse_duration
from canary.templating import DEFAULT_INTERVAL
from canary.types import MetricResult

log = logging.getLogger(__name__)

__all__ = [
    "MIN_STEP",
    "POINTS",
    "Samples",
    "compared_only",
    "fixed_bounds",
    "is_no_data",
    "parse_range_response",
    "query_range",
    "run_metrics",
    "window",
    "with_target",
]

POINTS = 60
"""A check asks for about this many samples per side: step = interval / POINTS, at least MIN_STEP."""
MIN_STEP = 1.0

async def query_range(client: MetricProvider, q: str, start: float, end: float, step: float) -> Samples:
    """One range query through the check's provider (canary/adapters/metrics)."""
    return await client.query_range(q, start, end, step)


def with_target(canary: Any, name: str) -> Any:
    """A copy of `canary` (model or dict) whose targetRef names `name`: the same query rendered
    for another workload."""
    if isinstance(canary, dict):
        doc = copy.deepcopy(canary)
        doc.setdefault("spec", {}).setdefault("targetRef", {})["name"] = name
        return doc
    spec = canary.spec.model_copy(update={"target_ref": canary.spec.target_ref.model_copy(update={"name": name})})
    return canary.model_copy(update={"spec": spec})


def window(metric: Any, now: float) -> tuple[float, float, float]:
    """(start, end, step) of a compared check: its interval ending now."""
    try:
        span = parse_duration(prom._get(metric, "interval") or DEFAULT_INTERVAL)
    except ValueError:
        span = parse_duration(DEFAULT_INTERVAL)
    step = max(MIN_STEP, span / POINTS)
    return now - span, now, step


def compared_only(metric: Any) -> bool:
    """A compared metric with no fixed bound of its own (no thresholdRange, no threshold): the
    comparison alone judges it, and Flagger's default max of 0 does not apply."""
    return (prom._get(metric, "compare") is not None and prom._get(metric, "threshold_range") is None
            and prom._get(metric, "threshold") is None)


def fixed_bounds(metric: Any, threshold_is_min: bool) -> tuple[float | None, float | None]:
    """prometheus.bounds, except for a compared-only metric: no bound."""
    return (None, None) if compared_only(metric) else prom.bounds(metric, threshold_is_min)


def _unbounded(result: MetricResult) -> MetricResult:
    if result.error:
        return replace(result, min=None, max=None)
    fresh = prom.evaluate(result.name, result.query, result.value, None, None)
    return replace(result, min=None, max=None, ok=fresh.ok, message=fresh.message)


def is_no_data(result: MetricResult) -> bool:
    """The instant query ran and found nothing (prometheus.evaluate's message), not an error."""
    return result.value is None and "no values found for query" in result.message


async def _sample(canary: Any, metric: Any, result: MetricResult, metrics_server: str, get_template: Any,
                  secrets: Any, options: dict[str, Any], mesh_provider: str, now: float) -> MetricResult:
    name = prom._path(canary, "spec", "target_ref", "name") or ""
    start, end, step = window(metric, now)
    try:
        checks = await asyncio.gather(
            prom.resolve_check(canary, metric, metrics_server, get_template, secrets, options, mesh_provider),
            prom.resolve_check(with_target(canary, f"{name}-primary"), metric, metrics_server, get_template,
                                secrets, options, mesh_provider))
        series = await asyncio.gather(*(query_range(c.client, c.query, start, end, step) for c in checks))
    except (prom.ResolveError, ProviderError) as exc:
        return replace(result, ok=False, error=True,
                       message=f"metric {result.name}: range query for the comparison failed: {exc}")
    scaled = [tuple((t, v * c.scale) for t, v in s) for c, s in zip(checks, series)]
    return replace(result, canary_samples=scaled[0], primary_samples=scaled[1])


async def run_metrics(canary: Any, metrics_server: str | None, get_template: Any, secrets: Any = None, *,
                      now: float, mesh_provider: str = "istio", timeout: float = prom.DEFAULT_QUERY_TIMEOUT,
                      retries: int = prom.DEFAULT_RETRIES, backoff: float = prom.DEFAULT_BACKOFF,
                      http: httpx.AsyncClient | None = None) -> tuple[MetricResult, ...]:
    """prometheus.run_metrics, plus the samples of compared metrics and the error flag.

    `now` (epoch seconds) ends the sampled window. Never raises for a failing check."""
    results = await prom.run_metrics(canary, metrics_server, get_template, secrets, timeout,
                                     mesh_provider=mesh_provider, retries=retries, backoff=backoff, http=http)
    results = tuple(r if r.value is not None or is_no_data(r) else replace(r, error=True) for r in results)
    metrics = prom._path(canary, "spec", "analysis", "metrics") or []
    results = tuple(_unbounded(r) if i < len(metrics) and compared_only(metrics[i]) else r
                    for i, r in enumerate(results))
    options = {"timeout": timeout, "retries": retries, "backoff": backoff, "http": http}
    jobs = {i: _sample(canary, m, results[i], metrics_server or "", get_template, secrets, options,
                       mesh_provider, now)
            for i, m in enumerate(metrics) if prom._get(m, "compare") is not None and not results[i].error}
    done = dict(zip(jobs, await asyncio.gather(*jobs.values()))) if jobs else {}
    return tuple(done.get(i, r) for i, r in enumerate(results))
