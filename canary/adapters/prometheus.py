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
* MetricTemplate providers go through the provider seam (canary/adapters/metrics/: one
  interface, one module per provider, a factory keyed by ``provider.type``): ``prometheus``
  (and, as in Flagger, a type we do not know) are queried; the other Flagger provider types
  (datadog, ...) give a failed result naming the type.
* ``request-duration`` values are kept as float milliseconds (Flagger truncates to whole ms).

Queries go through the provider (canary/adapters/metrics/prometheus.py) and ``canary.adapters.http`` (the one HTTP layer: egress policy, no redirects,
one retry policy). ``prometheus-api-client`` is not used: it is built on the synchronous
``requests`` library (it would block the event loop or need a thread per query) and the JSON of
an instant query is simple enough to read here. Addresses in messages lose their userinfo and
query; remote error texts are cleaned and capped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import httpx
from pydantic import ValidationError

from canary.adapters.metrics import (
    FLAGGER_ONLY_TYPES,
    MetricProvider,
    ProviderError,
    new_provider,
    unsupported,
)
from canary.adapters.metrics.builtin import (
    BUILTIN_METRICS,
    DURATION,
    HTTP_QUERIES,
    ISTIO_QUERIES,
    SUCCESS_RATE,
    _uses_http_observer,
    builtin_query_template,
)
from canary.adapters.metrics.prometheus import (
    BODY_SNIPPET,
    DEFAULT_BACKOFF,
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_RETRIES,
    MAX_BACKOFF,
    AuthType,
    PrometheusClient,
    PrometheusError,
    aclose_shared_clients,
    parse_query_response,
)
from canary.models import MetricTemplate
from canary.templating import (
    TemplateError,
    collapse_whitespace,
    context_for,
    render_query,
)
from canary.types import MetricResult

__all__ = [
    "ResolveError",
    "resolve_check",
    "BODY_SNIPPET",
    "DEFAULT_BACKOFF",
    "MAX_BACKOFF",
    "AuthType",
    "OTHER_PROVIDER_TYPES",
    "SUCCESS_RATE",
    "DURATION",
    "bounds",
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

OTHER_PROVIDER_TYPES = FLAGGER_ONLY_TYPES
"""MetricTemplate provider types that are not Prometheus (Flagger has clients for them; we don't)."""


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

    def __init__(self, name: str, query: str, client: MetricProvider, *, scale: float = 1.0,
                 unit: str = "", min_: float | None = None, max_: float | None = None,
                 source: str = "") -> None:
        self.name, self.query, self.client = name, query, client
        self.scale, self.unit, self.min, self.max, self.source = scale, unit, min_, max_, source


class ResolveError(Exception):
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
    # Flagger's deprecated `threshold` defaults to 0 and is a max (a min for the builtin success
    # rate): 0, a negative value or no bound at all is a bound, never "always pass"
    threshold = _get(metric, "threshold")
    value = 0.0 if threshold is None else float(threshold)
    if threshold_is_min:
        return value, None  # success rate: fails when threshold > value
    return None, value


def _as_template(template: Any, ref: str) -> MetricTemplate:
    """The looked-up MetricTemplate as the model (a lookup may give the object as a dict)."""
    if template is None:
        raise ResolveError(f"{ref} not found")
    if isinstance(template, MetricTemplate):
        return template
    try:
        return MetricTemplate.model_validate(template)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ResolveError(f"{ref} is not a valid MetricTemplate: {where}: {first.get('msg')}"[:300]) from exc


async def _secret_data(secrets: SecretSource, namespace: str, name: str) -> Mapping[str, Any] | None:
    if secrets is None:
        return None
    if callable(secrets):
        return await _resolve(secrets(namespace, name))
    return secrets.get((namespace, name))


async def resolve_check(
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
            raise ResolveError(f"cannot render the query of {what}: {exc}", collapse_whitespace(template)) from exc

    if template_ref is not None:
        tname = _get(template_ref, "name")
        tns = _get(template_ref, "namespace") or ctx.namespace
        ref = f"MetricTemplate {tns}/{tname}"
        if get_template is None:
            raise ResolveError(f"{ref} cannot be looked up (no template source configured)")
        template = _as_template(await _resolve(get_template(tns, tname)), ref)
        backend = template.spec.provider
        raw_query = template.spec.query
        problem = unsupported(backend.type)
        if problem is not None:  # before rendering: the query is in another provider's language
            raise ResolveError(f"{ref}: {problem}", collapse_whitespace(raw_query))
        query = render(raw_query, ref)
        address = backend.address or server
        if not address:
            raise ResolveError(f"{ref} has no provider.address and no metrics server is configured", query)
        auth: dict[str, Any] = {}
        if backend.secret_ref is not None:
            sname = backend.secret_ref.name
            data = await _secret_data(secrets, tns, sname)
            if data is None:
                raise ResolveError(f"Secret {tns}/{sname} of {ref} not found", query)
            if data.get("token"):
                auth["token"] = _text(data["token"])
            elif data.get("username") is not None and data.get("password") is not None:
                auth["username"] = _text(data["username"])
                auth["password"] = _text(data["password"])
            else:
                raise ResolveError(f"Secret {tns}/{sname} of {ref} has neither 'token' nor "
                              "'username' and 'password'", query)
        try:
            client = new_provider(
                backend.type,
                address,
                headers=backend.headers,
                insecure_skip_verify=bool(backend.insecure_skip_verify),
                **auth,
                **client_options,
            )
        except ProviderError as exc:
            raise ResolveError(str(exc), query) from exc
        lo, hi = bounds(metric, threshold_is_min=False)
        return _Check(name, query, client, min_=lo, max_=hi, source=ref)

    if not server:
        raise ResolveError("no metrics server is configured (--metrics-server or spec.metricsServer)")

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

    raise ResolveError(
        f"is not a builtin metric ({', '.join(BUILTIN_METRICS)}) and has neither templateRef nor query"
    )


def _client_or_fail(server: str, options: dict[str, Any], query: str) -> MetricProvider:
    """The provider of the built-in and inline queries: Prometheus at the metrics server."""
    try:
        return new_provider("prometheus", server, **options)
    except ProviderError as exc:
        raise ResolveError(str(exc), query) from exc


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
        check = await resolve_check(canary, metric, metrics_server, get_template, secrets,
                                     client_options, mesh_provider)
    except ResolveError as exc:
        return MetricResult(name=name, query=exc.query, value=None, ok=False, message=f"metric {name}: {exc}")
    except Exception as exc:  # a broken lookup callable must not break the tick
        log.exception("metric %s: unexpected error while preparing the query", name)
        return MetricResult(name=name, query="", value=None, ok=False,
                            message=f"metric {name}: {type(exc).__name__}: {exc}")
    try:
        raw = await check.client.query(check.query)
    except ProviderError as exc:
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
