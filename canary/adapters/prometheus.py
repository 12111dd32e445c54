"""Metric checks against Prometheus: built-in PromQL, MetricTemplates and inline queries.

Entry points:

* :func:`run_metrics` runs every ``spec.analysis.metrics[]`` entry of a Canary concurrently
  and returns one :class:`~canary.types.MetricResult` per entry, in spec order. It never
  raises for a failing check: a query error, a missing template or "no values" is a failed
  result whose message names the metric, the query and the reason.
* :class:`PrometheusClient` sends one instant query (``GET <address>/api/v1/query``) and
  returns a float, or None when Prometheus returned no value (empty result or NaN).

Behaviour, compared with Flagger:

* Queries are rendered with :mod:`canary.templating` (Go-template variables) and whitespace is
  collapsed before sending, as Flagger does.
* ``metrics[].interval`` defaults to ``1m`` for every metric. Flagger applies this default to the
  built-in metrics only, so a MetricTemplate rendering ``{{ interval }}`` without an interval
  produces ``[]`` there, which Prometheus rejects.
* If several series come back, the last one is used (as Flagger). A scalar result (e.g.
  ``scalar(...)``) is accepted too; Flagger fails to decode it.
* Each query attempt has an explicit timeout (default 5 s, Flagger's value). Connection
  failures (including connect timeouts) and HTTP 5xx are retried (default 2 retries, short
  exponential backoff); read timeouts and 4xx (bad PromQL) are not, because repeating them
  would only add load and delay the tick.
* Deprecated inline ``query`` metrics are rendered like templates too (Flagger sends them
  unrendered); their ``threshold`` acts as a max.
* A metric that is neither built in nor has ``templateRef`` or ``query`` gives a failed result
  (Flagger silently skips it).
* MetricTemplate providers: ``prometheus`` (and, as in Flagger, a type we do not know) are
  queried; the other Flagger provider types (datadog, ...) give a failed result naming the type.
* ``request-duration`` values are kept as float milliseconds (Flagger truncates to whole ms).

We talk to Prometheus with ``httpx.AsyncClient`` directly: ``prometheus-api-client`` is built on
the synchronous ``requests`` library, so using it would block the event loop (or need a thread
per query), and its result helpers need pandas. The JSON of an instant query is simple enough
to read here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from canary.templating import (
    TemplateError,
    collapse_whitespace,
    context_for,
    render_query,
)
from canary.types import MetricResult

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_RETRIES",
    "HTTP_QUERIES",
    "ISTIO_QUERIES",
    "PrometheusClient",
    "PrometheusError",
    "aclose_shared_clients",
    "builtin_query_template",
    "evaluate",
    "parse_query_response",
    "run_metrics",
]

log = logging.getLogger(__name__)

DEFAULT_QUERY_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
#: First backoff in seconds; doubles per retry, capped at MAX_BACKOFF.
DEFAULT_BACKOFF = 0.2
MAX_BACKOFF = 2.0
#: How much of an error response body is quoted in a message.
BODY_SNIPPET = 300

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN_METRICS = (SUCCESS_RATE, DURATION)

# Built-in PromQL, as Flagger ships it (an interface: the text must match). Whitespace layout
# does not matter: queries are whitespace-collapsed before sending.

#: Istio observer. request-duration is in milliseconds.
ISTIO_QUERIES: Mapping[str, str] = {
    SUCCESS_RATE: (
        'sum(rate(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) '
        '/ sum(rate(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'
    ),
    DURATION: (
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
        'reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))'
    ),
}

#: HTTP observer (providers kubernetes and gatewayapi*). request-duration is in seconds.
HTTP_QUERIES: Mapping[str, str] = {
    SUCCESS_RATE: (
        'sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}'
        "[{{ interval }}])) "
        '/ sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) * 100'
    ),
    DURATION: (
        "histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{"
        'kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le))'
    ),
}

#: MetricTemplate provider types that are not Prometheus (Flagger has clients for them; we don't).
OTHER_PROVIDER_TYPES = frozenset(
    {"influxdb", "datadog", "externalmetrics", "stackdriver", "cloudwatch", "newrelic",
     "graphite", "dynatrace", "keptn", "splunk"}
)


def builtin_query_template(metric_name: str, provider: str | None, target_kind: str | None = None) -> str:
    """The built-in PromQL template of `metric_name` for a mesh `provider`.

    As in Flagger's observer factory: ``kubernetes`` and ``gatewayapi*`` use the HTTP observer,
    every other provider uses Istio's queries, and a ``Service`` target falls back to Istio too.
    """
    http = _uses_http_observer(provider, target_kind)
    return (HTTP_QUERIES if http else ISTIO_QUERIES)[metric_name]


def _uses_http_observer(provider: str | None, target_kind: str | None) -> bool:
    provider = provider or "istio"
    return target_kind != "Service" and (provider == "kubernetes" or provider.startswith("gatewayapi"))


# ---- HTTP ---------------------------------------------------------------------------------


class PrometheusError(Exception):
    """A query could not be run or its answer could not be read. str() is the reason."""


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _shared_client(verify: bool) -> httpx.AsyncClient:
    """One pooled AsyncClient per event loop and TLS-verification setting, reused by all queries."""
    loop = asyncio.get_running_loop()
    per_loop = _shared.setdefault(loop, {})
    client = per_loop.get(verify)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            verify=verify,
            timeout=DEFAULT_QUERY_TIMEOUT,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        per_loop[verify] = client
    return client


async def aclose_shared_clients() -> None:
    """Close the shared HTTP clients of the running loop (call on operator shutdown)."""
    per_loop = _shared.pop(asyncio.get_running_loop(), {})
    for client in per_loop.values():
        await client.aclose()


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RetryableStatus):
        return True
    if isinstance(exc, httpx.ConnectTimeout):
        return True
    if isinstance(exc, httpx.TimeoutException):
        return False  # read/write/pool timeouts: the server is slow, asking again won't help
    return isinstance(exc, httpx.TransportError)


def _snippet(text: str, limit: int = BODY_SNIPPET) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _query_url(address: str) -> str:
    """<address>/api/v1/query, keeping a path prefix such as /prometheus."""
    parts = urlsplit(address.strip())
    if not parts.scheme or not parts.netloc:
        raise PrometheusError(f"invalid Prometheus address {address!r} (expected e.g. http://prometheus:9090)")
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


def parse_query_response(status_code: int, body: str) -> float | None:
    """Read the answer of /api/v1/query: the value of the last series, or None if there is none."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise PrometheusError(f"HTTP {status_code}, not a Prometheus API response: {_snippet(body)!r}")
    if status_code >= 400 or doc.get("status") != "success":
        kind = doc.get("errorType") or "error"
        reason = doc.get("error") or _snippet(body)
        raise PrometheusError(f"HTTP {status_code} {kind}: {reason}")
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
        self.address = address
        self.url = _query_url(address)
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

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None and not self.insecure_skip_verify:
            return self._http
        return _shared_client(verify=not self.insecure_skip_verify)

    async def _get(self, query: str) -> httpx.Response:
        response = await self._client().get(
            self.url,
            params={"query": query},
            headers=self._headers,
            auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            timeout=httpx.Timeout(self.timeout),
        )
        if response.status_code >= 500:
            raise _RetryableStatus(response)
        return response

    async def query(self, q: str) -> float | None:
        """Run an instant query; the value of the last series, or None (no series, or NaN).

        Raises PrometheusError with the reason (HTTP status and Prometheus' error text,
        timeout, connection failure) when the query cannot be answered.
        """
        query = collapse_whitespace(q)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retries + 1),
                wait=wait_exponential(multiplier=self.backoff, max=MAX_BACKOFF),
                retry=retry_if_exception(_is_retryable),
                reraise=True,
            ):
                with attempt:
                    response = await self._get(query)
        except _RetryableStatus as exc:
            response = exc.response
        except httpx.TimeoutException as exc:
            raise PrometheusError(
                f"no answer from {self.address} within {self.timeout:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"cannot reach {self.address}: {type(exc).__name__}: {exc or 'connection failed'}"
            ) from exc
        return parse_query_response(response.status_code, response.text)

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


# ---- the metric checks ----------------------------------------------------------------------

TemplateLookup = Callable[[str, str], Any]
"""get_template(namespace, name) -> MetricTemplate | dict | None (or an awaitable of it)."""

SecretSource = Union[
    Mapping[tuple[str, str], Mapping[str, Any]],
    Callable[[str, str], Any],
    None,
]
"""Decoded Secret data by (namespace, name), or a lookup callable (sync or async)."""


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _get(obj: Any, snake: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(_camel(snake), obj.get(snake))
    value = getattr(obj, snake, None)
    return getattr(obj, _camel(snake), None) if value is None else value


def _path(obj: Any, *names: str) -> Any:
    for name in names:
        obj = _get(obj, name)
        if obj is None:
            return None
    return obj


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else str(value)


class _Check:
    """A metric entry, resolved: what to query where, and the bounds to hold it to."""

    def __init__(self, name: str, query: str, client: PrometheusClient, *, scale: float = 1.0,
                 unit: str = "", min_: float | None = None, max_: float | None = None,
                 source: str = "") -> None:
        self.name, self.query, self.client = name, query, client
        self.scale, self.unit, self.min, self.max, self.source = scale, unit, min_, max_, source


class _Failed(Exception):
    """Resolving a metric failed: carries the (rendered, maybe empty) query and the reason."""

    def __init__(self, reason: str, query: str = "") -> None:
        super().__init__(reason)
        self.query = query


def bounds(metric: Any, threshold_is_min: bool) -> tuple[float | None, float | None]:
    """(min, max) from thresholdRange, else from the deprecated threshold (as Flagger reads it)."""
    rng = _get(metric, "threshold_range")
    if rng is not None:
        lo, hi = _get(rng, "min"), _get(rng, "max")
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    threshold = _get(metric, "threshold")
    if threshold is None:
        return None, None
    if threshold_is_min:
        return float(threshold), None  # success rate: fails when threshold > value
    return (None, float(threshold)) if threshold > 0 else (None, None)


async def _secret_data(secrets: SecretSource, namespace: str, name: str) -> Mapping[str, Any] | None:
    if secrets is None:
        return None
    if callable(secrets):
        return await _resolve(secrets(namespace, name))
    return secrets.get((namespace, name))


async def _resolve_check(
    canary: Any,
    metric: Any,
    metrics_server: str,
    get_template: TemplateLookup | None,
    secrets: SecretSource,
    client_options: dict[str, Any],
    mesh_provider: str,
) -> _Check:
    name = _get(metric, "name") or "<unnamed>"
    ctx = context_for(canary, metric)
    server = _path(canary, "spec", "metrics_server") or metrics_server
    template_ref = _get(metric, "template_ref")

    def render(template: str, what: str) -> str:
        try:
            return render_query(template, ctx)
        except TemplateError as exc:
            raise _Failed(f"cannot render the query of {what}: {exc}", collapse_whitespace(template)) from exc

    if template_ref is not None:
        tname = _get(template_ref, "name")
        tns = _get(template_ref, "namespace") or ctx.namespace
        ref = f"MetricTemplate {tns}/{tname}"
        if get_template is None:
            raise _Failed(f"{ref} cannot be looked up (no template source configured)")
        template = await _resolve(get_template(tns, tname))
        if template is None:
            raise _Failed(f"{ref} not found")
        spec = _get(template, "spec")
        provider = _get(spec, "provider")
        ptype = _get(provider, "type") or "prometheus"
        raw_query = _get(spec, "query") or ""
        if ptype in OTHER_PROVIDER_TYPES:
            raise _Failed(f"{ref}: provider type {ptype!r} is not supported (only prometheus)",
                          collapse_whitespace(raw_query))
        query = render(raw_query, ref)
        address = _get(provider, "address") or server
        if not address:
            raise _Failed(f"{ref} has no provider.address and no metrics server is configured", query)
        auth: dict[str, Any] = {}
        secret_ref = _get(provider, "secret_ref")
        if secret_ref is not None:
            sname = _get(secret_ref, "name")
            data = await _secret_data(secrets, tns, sname)
            if data is None:
                raise _Failed(f"Secret {tns}/{sname} of {ref} not found", query)
            if data.get("token"):
                auth["token"] = _text(data["token"])
            elif data.get("username") is not None and data.get("password") is not None:
                auth["username"] = _text(data["username"])
                auth["password"] = _text(data["password"])
            else:
                raise _Failed(f"Secret {tns}/{sname} of {ref} has neither 'token' nor "
                              "'username' and 'password'", query)
        try:
            client = PrometheusClient(
                address,
                headers=_get(provider, "headers"),
                insecure_skip_verify=bool(_get(provider, "insecure_skip_verify")),
                **auth,
                **client_options,
            )
        except PrometheusError as exc:
            raise _Failed(str(exc), query) from exc
        lo, hi = bounds(metric, threshold_is_min=False)
        return _Check(name, query, client, min_=lo, max_=hi, source=ref)

    if not server:
        raise _Failed("no metrics server is configured (--metrics-server or spec.metricsServer)")

    if name in BUILTIN_METRICS:
        provider = _path(canary, "spec", "provider") or mesh_provider
        kind = _path(canary, "spec", "target_ref", "kind")
        http = _uses_http_observer(provider, kind)
        query = render((HTTP_QUERIES if http else ISTIO_QUERIES)[name], f"builtin {name}")
        client = _client_or_fail(server, client_options, query)
        if name == SUCCESS_RATE:
            lo, hi = bounds(metric, threshold_is_min=True)
            return _Check(name, query, client, unit="%", min_=lo, max_=hi, source="builtin")
        lo, hi = bounds(metric, threshold_is_min=False)
        return _Check(name, query, client, scale=1000.0 if http else 1.0, unit="ms",
                      min_=lo, max_=hi, source="builtin")

    inline = _get(metric, "query")
    if inline:
        query = render(inline, "the inline query")
        client = _client_or_fail(server, client_options, query)
        lo, hi = bounds(metric, threshold_is_min=False)
        return _Check(name, query, client, min_=lo, max_=hi, source="inline query")

    raise _Failed(
        f"is not a builtin metric ({', '.join(BUILTIN_METRICS)}) and has neither templateRef nor query"
    )


def _client_or_fail(server: str, options: dict[str, Any], query: str) -> PrometheusClient:
    try:
        return PrometheusClient(server, **options)
    except PrometheusError as exc:
        raise _Failed(str(exc), query) from exc


def evaluate(name: str, query: str, value: float | None, min_: float | None, max_: float | None,
             unit: str = "") -> MetricResult:
    """Hold `value` to [min_, max_]; None means no value (a failed check)."""
    if value is None:
        return MetricResult(
            name=name, query=query, value=None, min=min_, max=max_, ok=False,
            message=f"metric {name}: no values found for query {query!r} "
                    "(is the target receiving traffic?)",
        )
    shown = f"{_fmt(value)}{unit}"
    if min_ is not None and value < min_:
        message, ok = f"metric {name}: {shown} < min {min_:g}{unit}", False
    elif max_ is not None and value > max_:
        message, ok = f"metric {name}: {shown} > max {max_:g}{unit}", False
    else:
        lo = "-inf" if min_ is None else f"{min_:g}"
        hi = "+inf" if max_ is None else f"{max_:g}"
        message, ok = f"metric {name}: {shown} within [{lo}, {hi}]{unit}", True
    return MetricResult(name=name, query=query, value=value, min=min_, max=max_, ok=ok, message=message)


async def _run_one(canary: Any, metric: Any, metrics_server: str, get_template: TemplateLookup | None,
                   secrets: SecretSource, client_options: dict[str, Any], mesh_provider: str) -> MetricResult:
    name = _get(metric, "name") or "<unnamed>"
    try:
        check = await _resolve_check(canary, metric, metrics_server, get_template, secrets,
                                     client_options, mesh_provider)
    except _Failed as exc:
        return MetricResult(name=name, query=exc.query, value=None, ok=False, message=f"metric {name}: {exc}")
    except Exception as exc:  # a broken lookup callable must not break the tick
        log.exception("metric %s: unexpected error while preparing the query", name)
        return MetricResult(name=name, query="", value=None, ok=False,
                            message=f"metric {name}: {type(exc).__name__}: {exc}")
    try:
        raw = await check.client.query(check.query)
    except PrometheusError as exc:
        return MetricResult(name=name, query=check.query, value=None, min=check.min, max=check.max,
                            ok=False, message=f"metric {name}: query {check.query!r} failed: {exc}")
    except Exception as exc:
        log.exception("metric %s: unexpected error while querying", name)
        return MetricResult(name=name, query=check.query, value=None, min=check.min, max=check.max,
                            ok=False, message=f"metric {name}: query {check.query!r} failed: "
                                              f"{type(exc).__name__}: {exc}")
    value = None if raw is None else raw * check.scale
    return evaluate(name, check.query, value, check.min, check.max, check.unit)


async def run_metrics(
    canary: Any,
    metrics_server: str | None,
    get_template: TemplateLookup | None,
    secrets: SecretSource = None,
    timeout: float = DEFAULT_QUERY_TIMEOUT,
    *,
    mesh_provider: str = "istio",
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    http: httpx.AsyncClient | None = None,
) -> tuple[MetricResult, ...]:
    """Run ``spec.analysis.metrics`` of `canary`: one MetricResult per entry, in spec order.

    * `metrics_server`: the operator's default Prometheus URL (``spec.metricsServer`` wins).
    * `get_template(namespace, name)`: the MetricTemplate (model or dict) or None; may be async.
      ``templateRef.namespace`` defaults to the canary's namespace.
    * `secrets`: decoded Secret data for ``provider.secretRef`` (looked up in the template's
      namespace) as a mapping keyed by (namespace, name) or a callable (sync or async).
    * `mesh_provider`: the operator default when ``spec.provider`` is empty; picks the builtin PromQL.
    * `timeout`, `retries`, `backoff`: per query attempt timeout and retry policy.

    The checks run concurrently; this never raises for a failing check.
    """
    metrics = _path(canary, "spec", "analysis", "metrics") or []
    options = {"timeout": timeout, "retries": retries, "backoff": backoff, "http": http}
    results = await asyncio.gather(
        *(_run_one(canary, m, metrics_server or "", get_template, secrets, options, mesh_provider)
          for m in metrics)
    )
    return tuple(results)

