"""The built-in metrics (request-success-rate, request-duration) as PromQL, exactly as Flagger
ships them (an interface: the text must match), per observer: Istio's, or the HTTP observer of
the kubernetes and gatewayapi providers."""

from __future__ import annotations

from collections.abc import Mapping

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
