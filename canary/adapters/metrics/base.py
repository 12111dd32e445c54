"""The seam between the metric checks and a metrics backend (as Flagger's pkg/metrics/providers):
one `MetricProvider` interface, one module per provider, and a factory keyed by the
MetricTemplate's `provider.type` (canary/adapters/metrics/__init__.py)."""

from __future__ import annotations

from typing import Protocol

Samples = tuple[tuple[float, float], ...]
"""(epoch seconds, value) pairs of a range query, oldest first."""


class ProviderError(Exception):
    """A query could not be run or its answer could not be read. str() is the reason."""


class UnsupportedProvider(ProviderError):
    """The MetricTemplate names a provider type this operator has no client for."""


class MetricProvider(Protocol):
    """A metrics backend, as the checks use it."""

    address: str
    """The address as it may be shown in a message (no userinfo, no query)."""

    async def query(self, q: str) -> float | None:
        """One instant query: its value, or None when there is none. Raises ProviderError."""
        ...

    async def query_range(self, q: str, start: float, end: float, step: float) -> Samples:
        """One range query (the judged checks): its samples, () when there are none."""
        ...

    async def check_online(self) -> str | None:
        """None when the backend answers, else the reason it does not."""
        ...
