"""Metric providers (as Flagger's pkg/metrics/providers): the `MetricProvider` interface
(base.py), one module per provider (prometheus.py; builtin.py holds the built-in PromQL), and
`new_provider`, the factory keyed by a MetricTemplate's `provider.type`.

Adding a provider (Datadog, CloudWatch, ...) is one module with a class that has the interface
and one line in `PROVIDERS`; the checks (canary/adapters/prometheus.py) and the judged range
queries (canary/adapters/comparison.py) go through the factory only.

Types Flagger has clients for and this operator has not give a failed check that names the type
(`UnsupportedProvider`). A type Flagger does not know either cannot pass the CRD's enum; a
template that comes in by another way with one is queried as Prometheus, as Flagger's factory
does.
"""

from __future__ import annotations

from typing import Any, Callable

from canary.adapters.metrics.base import MetricProvider, ProviderError, Samples, UnsupportedProvider
from canary.adapters.metrics.prometheus import PrometheusClient, PrometheusError

PROVIDERS: dict[str, Callable[..., MetricProvider]] = {
    "prometheus": PrometheusClient,
}
"""provider.type -> the provider's constructor: (address, *, headers, insecure_skip_verify,
token | username and password, timeout, retries, backoff, http)."""

DEFAULT_TYPE = "prometheus"

FLAGGER_ONLY_TYPES = frozenset(
    {"influxdb", "datadog", "externalmetrics", "stackdriver", "cloudwatch", "newrelic",
     "graphite", "dynatrace", "keptn", "splunk"}
)
"""MetricTemplate provider types Flagger has clients for and this operator has not."""


def supported(provider_type: str) -> bool:
    return provider_type in PROVIDERS or provider_type not in FLAGGER_ONLY_TYPES


def unsupported(provider_type: str | None) -> str | None:
    """Why `provider_type` cannot be queried here, or None when it can."""
    kind = provider_type or DEFAULT_TYPE
    if supported(kind):
        return None
    return f"provider type {kind!r} is not supported (only {', '.join(sorted(PROVIDERS))})"


def new_provider(provider_type: str | None, address: str, **options: Any) -> MetricProvider:
    """The provider of `provider_type` (default prometheus) for `address`.

    Raises UnsupportedProvider for a type without a client here, and the provider's own
    ProviderError for an address it cannot use."""
    kind = provider_type or DEFAULT_TYPE
    problem = unsupported(kind)
    if problem is not None:
        raise UnsupportedProvider(problem)
    return PROVIDERS.get(kind, PROVIDERS[DEFAULT_TYPE])(address, **options)


__all__ = [
    "DEFAULT_TYPE",
    "FLAGGER_ONLY_TYPES",
    "PROVIDERS",
    "MetricProvider",
    "PrometheusClient",
    "PrometheusError",
    "ProviderError",
    "Samples",
    "UnsupportedProvider",
    "new_provider",
    "supported",
    "unsupported",
]
