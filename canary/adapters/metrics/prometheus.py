"""The Prometheus provider: instant and range queries against a Prometheus-compatible API.

`PrometheusClient` sends ``GET <address>/api/v1/query`` (and ``/api/v1/query_range`` for the
judged checks) through ``canary.adapters.http`` (the one HTTP layer: egress policy, no
redirects, one retry policy) and reads the answer: the value of the last series, or None when
Prometheus returned none (empty result or NaN). See canary/adapters/prometheus.py for the
checks and the differences from Flagger."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union
from urllib.parse import urlsplit, urlunsplit

import httpx

from canary.adapters import http as egress_http
from canary.adapters.metrics.base import ProviderError, Samples
from canary.adapters.metrics.gate import credentials_digest, gate
from canary.judge import MAX_SAMPLES
from canary.templating import collapse_whitespace

log = logging.getLogger(__name__)

DEFAULT_QUERY_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
#: First backoff in seconds; doubles per retry, capped at MAX_BACKOFF.
DEFAULT_BACKOFF = 0.2
MAX_BACKOFF = 2.0
#: How much of an error response body is quoted in a message.
BODY_SNIPPET = egress_http.SNIPPET


class PrometheusError(ProviderError):
    """A query could not be run or its answer could not be read. str() is the reason."""


async def aclose_shared_clients() -> None:
    """Close the shared HTTP clients of the running loop (call on operator shutdown)."""
    await egress_http.aclose_shared_clients()


def _snippet(text: str, limit: int = BODY_SNIPPET) -> str:
    return egress_http.snippet(text, limit)


def _query_url(address: str) -> str:
    """<address>/api/v1/query, keeping a path prefix such as /prometheus."""
    parts = urlsplit(address.strip())
    if not parts.scheme or not parts.netloc:
        raise PrometheusError(f"invalid Prometheus address {egress_http.safe_url(address)!r} "
                              "(expected e.g. http://prometheus:9090)")
    path = parts.path.rstrip("/") + "/api/v1/query"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _parse_sample(raw: Any) -> float | None:
    """The value of a [timestamp, "value"] pair; None for NaN."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise PrometheusError(f"unexpected sample {raw!r} in Prometheus response")
    try:
        value = float(raw[1])
    except (TypeError, ValueError) as exc:
        raise PrometheusError(f"sample value {raw[1]!r} is not a number") from exc
    return None if math.isnan(value) else value


def _success(status_code: int, body: str) -> dict:
    """The Prometheus API envelope of a successful answer; PrometheusError (its text bounded:
    it comes from the server) for anything else."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise PrometheusError(f"HTTP {status_code}, not a Prometheus API response: {_snippet(body)!r}")
    if status_code >= 400 or doc.get("status") != "success":
        kind = doc.get("errorType") or "error"
        reason = _snippet(str(doc.get("error") or body), 200)
        raise PrometheusError(f"HTTP {status_code} {_snippet(str(kind), 40)}: {reason}")
    return doc


def parse_query_response(status_code: int, body: str) -> float | None:
    """Read the answer of /api/v1/query: the value of the last series, or None if there is none."""
    doc = _success(status_code, body)
    data = doc.get("data") or {}
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "vector":
        if not result:
            return None
        return _parse_sample(result[-1].get("value"))
    if result_type == "scalar":
        return _parse_sample(result)
    raise PrometheusError(
        f"query returned a {result_type or 'unknown'} result; an instant vector or scalar is needed"
    )


AuthType = Union[httpx.Auth, tuple[str, str], None]


class PrometheusClient:
    """Instant queries against one Prometheus-compatible API.

    `headers` values may be strings or lists of strings (MetricTemplate ``provider.headers``).
    `token` is sent as ``Authorization: Bearer``; `username`/`password` as basic auth.
    `http` lets the caller share its own AsyncClient; by default one pooled client per event
    loop is reused (a separate one for ``insecure_skip_verify``).
    """

    def __init__(
        self,
        address: str,
        *,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        insecure_skip_verify: bool = False,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = _query_url(address)
        self.address = egress_http.safe_url(address)
        """The address as it may be shown: without userinfo or query (they may hold credentials)."""
        self._secrets = [v for v in (token, password, urlsplit(address.strip()).password) if v]
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.insecure_skip_verify = insecure_skip_verify
        self._http = http
        pairs: list[tuple[str, str]] = []
        for key, value in (headers or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            pairs.extend((key, str(v)) for v in values)
        self._auth: AuthType = None
        if token:
            pairs.append(("Authorization", f"Bearer {token}"))
        elif username is not None and password is not None:
            self._auth = httpx.BasicAuth(username, password)
        self._headers = httpx.Headers(pairs)
        # what makes two identical queries interchangeable (canary.adapters.metrics.gate)
        self._credentials = credentials_digest(sorted(pairs), username, password, insecure_skip_verify,
                                               self.timeout, self.retries)

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None and not self.insecure_skip_verify:
            return self._http
        return egress_http.client(verify=not self.insecure_skip_verify, timeout=DEFAULT_QUERY_TIMEOUT)

    async def query(self, q: str) -> float | None:
        """Run an instant query; the value of the last series, or None (no series, or NaN).

        Raises PrometheusError with the reason (HTTP status and Prometheus' error text,
        timeout, connection failure) when the query cannot be answered. Retries follow the one
        policy of canary.adapters.http (5xx but 501, 429, connection failures).
        """
        query = collapse_whitespace(q)
        return await gate().run(self.address, ("query", self.url, query, self._credentials),
                                lambda: self._query(query))

    async def _query(self, query: str) -> float | None:
        try:
            response = await egress_http.request(
                self._client(), "GET", self.url, params={"query": query}, headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        except httpx.TimeoutException as exc:
            raise PrometheusError(
                f"no answer from {self.address} within {self.timeout:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            reason = egress_http.redact(egress_http.clean(str(exc) or "connection failed"), self._secrets)
            raise PrometheusError(f"cannot reach {self.address}: {type(exc).__name__}: {reason}") from exc
        return parse_query_response(response.status_code, response.text)

    async def query_range(self, q: str, start: float, end: float, step: float) -> Samples:
        """One range query (GET <address>/api/v1/query_range) through the one HTTP layer, with the
        client's address, auth, headers, timeout and retry policy."""
        params = {"query": collapse_whitespace(q), "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        key = ("query_range", self.url, tuple(sorted(params.items())), self._credentials)
        return await gate().run(self.address, key, lambda: self._query_range(params))

    async def _query_range(self, params: dict[str, str]) -> Samples:
        try:
            response = await egress_http.request(
                self._client(), "GET", _range_url(self.url), params=params, headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"no answer from {self.address} within {self.timeout:g}s "
                                  f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            reason = egress_http.redact(egress_http.clean(str(exc) or "connection failed"), self._secrets)
            raise PrometheusError(f"cannot reach {self.address}: {type(exc).__name__}: {reason}") from exc
        return parse_range_response(response.status_code, response.text)

    async def check_online(self) -> str | None:
        """None if ``vector(1)`` answers 1, else the reason it does not."""
        try:
            value = await self.query("vector(1)")
        except PrometheusError as exc:
            return str(exc)
        if value != 1:
            return f"vector(1) returned {value!r} instead of 1"
        return None

    async def is_online(self) -> bool:
        reason = await self.check_online()
        if reason is not None:
            log.warning("metrics server %s is not available: %s", self.address, reason)
        return reason is None


def _range_url(query_url: str) -> str:
    """The client's /api/v1/query URL, for /api/v1/query_range."""
    parts = urlsplit(query_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path + "_range", parts.query, ""))


def parse_range_response(status_code: int, body: str, limit: int = MAX_SAMPLES) -> Samples:
    """The (time, value) pairs of the last series of a /api/v1/query_range answer (the latest
    `limit` of them); () when there is no series. NaN values are kept (the judge drops them)."""
    doc = _success(status_code, body)
    data = doc.get("data") or {}
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"range query returned a {data.get('resultType') or 'unknown'} result, "
                                   "a range vector (matrix) is needed")
    result = data.get("result") or []
    if not result:
        return ()
    values = result[-1].get("values") if isinstance(result[-1], dict) else None
    if not isinstance(values, list):
        raise PrometheusError("range query result without values")
    out: list[tuple[float, float]] = []
    for raw in values[-limit:]:
        if not isinstance(raw, (list, tuple)) or len(raw) != 2:
            raise PrometheusError(f"unexpected sample {raw!r} in Prometheus response")
        try:
            out.append((float(raw[0]), float(raw[1])))
        except (TypeError, ValueError) as exc:
            raise PrometheusError(f"sample {raw!r} is not a number") from exc
    return tuple(out)
