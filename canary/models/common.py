"""Shared field types of the API: bounded strings and numbers, name rules, enums, timestamps and
the base model every kind derives from."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from canary.duration import DURATION_MAX_LENGTH, DURATION_PATTERN, parse_duration

# ---- shared field types ------------------------------------------------------------------

Weight = Annotated[int, Field(ge=0, le=100)]
"""A traffic weight or a percentage: 0..100."""
PositiveWeight = Annotated[int, Field(ge=1, le=100)]
"""A weight or a percentage that 0 would make meaningless: 1..100."""

NonNegative = Annotated[int, Field(ge=0)]
Int32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH)]
"""A Go duration such as 30s, 1m or 1m30s (see canary.duration)."""


def _at_most(seconds: float) -> AfterValidator:
    def check(value: str) -> str:
        if parse_duration(value) > seconds:
            raise ValueError(f"{value} is longer than the maximum of {_fmt(seconds)}")
        return value
    return AfterValidator(check)


def _fmt(seconds: float) -> str:
    from canary.duration import format_duration
    return format_duration(seconds)


DAY = 86400.0
WEBHOOK_TIMEOUT_MAX = 600.0
"""webhooks[].timeout: at most 10m (a tick waits for its webhooks)."""
WEBHOOK_RETRIES_MAX = 10
ITERATIONS_MAX = 1000
THRESHOLD_MAX = 1000
DayDuration = Annotated[Duration, _at_most(DAY)]
"""A duration of at most 24h."""

# ---- names: one rule for every name that reaches a URL or an object (issue 10) ---------------

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DERIVED_SUFFIX = len("-primary")
"""Room kept in a name for the `-primary` / `-canary` objects derived from it."""
CANARY_NAME_MAX = 253 - 17
"""Events are named `<canary>.<16 hex digits>` and must fit 253 characters."""

ObjectName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]
"""The name of a namespaced object (DNS-1123 subdomain)."""
DerivedObjectName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253 - DERIVED_SUFFIX)]
"""An object name that gets a `-primary` copy."""
NamespaceName = Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)]
ServiceName = Annotated[str, Field(pattern=DNS1035_LABEL, max_length=63 - DERIVED_SUFFIX)]
"""A Service name with room for `-primary` and `-canary` (DNS-1035 label of at most 55)."""
PrintableText = r"^[^\x00-\x1f\x7f-\x9f]*$"
Label = Annotated[str, Field(min_length=1, max_length=253, pattern=PrintableText)]
"""A name that is no object's (a metric, webhook or alert of the analysis): printable, bounded."""
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
ProxyUrl = Annotated[str, Field(max_length=2048, pattern=r"^(https?|socks5h?)://[^\s\x00-\x1f\x7f]+$")]
Query = Annotated[str, Field(max_length=16384)]
Value = Annotated[str, Field(max_length=1024)]
StringMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)]
"""Labels, annotations, headers: at most 64 entries."""
Names = Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=64)]
VARIABLE_NAME = r"^[A-Za-z0-9_.-]+$"
COOKIE_NAME = r"^[A-Za-z0-9!#$&'*+.^_`|~-]+$"
"""An RFC 6265 cookie name (token): no ';', '=', space or control character."""
COOKIE_DOMAIN = r"^\.?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"
COOKIE_PATH = r"^/[^;\x00-\x1f\x7f]*$"


def _list_map(max_items: int) -> Any:
    """A list of objects keyed by `name`: unique names, checked at admission (listType map)."""
    return Field(max_length=max_items, json_schema_extra={"x-kubernetes-list-type": "map",
                                                          "x-kubernetes-list-map-keys": ["name"]})


def _unique_names(items: list[Any] | None, what: str) -> None:
    seen: set[str] = set()
    for item in items or []:
        if item.name in seen:
            raise ValueError(f"{what} name {item.name!r} is used twice")
        seen.add(item.name)

IntOrString = int | str
"""Kubernetes int-or-string (a port number or a port name)."""

JsonObject = dict[str, Any]
"""A free-form object, kept as is (x-kubernetes-preserve-unknown-fields)."""


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def format_timestamp(value: datetime) -> str:
    """RFC3339 in UTC with a trailing Z; fractional seconds only when present."""
    value = _to_utc(value)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


Timestamp = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""A timezone-aware UTC datetime; naive input is taken as UTC. JSON: 2026-11-26T07:20:00Z."""

Provider = Literal[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
]
WebhookTypeName = Literal[
    "",
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-promotion",
    "post-rollout",
    "event",
    "rollback",
    "confirm-traffic-increase",
]
Severity = Literal["", "info", "warn", "error"]
MetricProviderType = Literal[
    "prometheus",
    "influxdb",
    "datadog",
    "externalmetrics",
    "stackdriver",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "keptn",
    "splunk",
]
AlertProviderType = Literal["slack", "msteams", "msteams-workflows", "discord", "rocket", "gchat", "googlechat",
                            "generic", "alertmanager", "pagerduty", "opsgenie"]
Strategy = Literal["canary", "ab", "bluegreen"]


class ApiModel(BaseModel):
    """Base of every model: camelCase aliases, unknown fields kept, dumps by alias."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="allow",
        use_attribute_docstrings=True,
    )

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict by alias without unset (None) fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
