"""spec.service: the generated Services and the routing objects."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from canary.duration import DURATION_MAX_LENGTH
from canary.models.common import (
    ApiModel,
    DayDuration,
    IntOrString,
    JsonObject,
    Label,
    NamespaceName,
    Names,
    ObjectName,
    PortNumber,
    ServiceName,
    StringMap,
    Value,
)


class StringMatch(ApiModel):
    """At most one of exact, prefix, suffix, regex (RE2)."""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 1})

    exact: Value | None = None
    prefix: Value | None = None
    suffix: Value | None = None
    regex: Value | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"a string match takes one of exact, prefix, suffix, regex; got {given}")
        return self


class HTTPMatchRequest(ApiModel):
    """Istio-style HTTP match (service.match and analysis.match)."""

    name: Label | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: Annotated[dict[str, StringMatch], Field(max_length=32)] | None = None
    query_params: Annotated[dict[str, StringMatch], Field(max_length=32)] | None = None
    without_headers: Annotated[dict[str, StringMatch], Field(max_length=32)] | None = None
    port: PortNumber | None = None
    source_labels: StringMap | None = None
    gateways: Names | None = None
    ignore_uri_case: bool | None = None
    source_namespace: NamespaceName | None = None


class HTTPRewrite(ApiModel):
    uri: str | None = None
    authority: str | None = None
    type: str | None = None
    """Gateway API only: ReplacePrefixMatch, otherwise a full path replace."""


class HTTPRetry(ApiModel):
    attempts: Annotated[int, Field(ge=0, le=100)] | None = None
    per_try_timeout: str | None = None
    retry_on: str | None = None


class HeaderOperations(ApiModel):
    set: StringMap | None = None
    add: StringMap | None = None
    remove: Names | None = None


class Headers(ApiModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class BackendRef(ApiModel):
    group: str | None = None
    kind: str | None = None
    name: ObjectName
    namespace: NamespaceName | None = None
    port: PortNumber | None = None


class HTTPRequestMirror(ApiModel):
    """Gateway API static request mirror (not the analysis mirroring)."""

    backend_ref: BackendRef


class CorsPolicy(ApiModel):
    allow_origin: Names | None = None
    allow_origins: Annotated[list[StringMatch], Field(max_length=64)] | None = None
    allow_methods: Names | None = None
    allow_headers: Names | None = None
    expose_headers: Names | None = None
    max_age: str | None = None
    allow_credentials: bool | None = None


class ParentRef(ApiModel):
    """Gateway API parentRef of the generated HTTPRoute."""

    group: str | None = None
    """Default gateway.networking.k8s.io."""
    kind: str | None = None
    """Default Gateway."""
    name: ObjectName
    namespace: NamespaceName | None = None
    section_name: Annotated[str, Field(max_length=253)] | None = None
    port: PortNumber | None = None

    @property
    def group_value(self) -> str:
        return self.group if self.group is not None else "gateway.networking.k8s.io"

    @property
    def kind_value(self) -> str:
        return self.kind or "Gateway"


class ServiceMetadata(ApiModel):
    labels: StringMap | None = None
    annotations: StringMap | None = None


class UnmanagedMetadata(ApiModel):
    """Label and annotation keys left alone on the Services the operator owns."""

    labels: Names | None = None
    annotations: Names | None = None


class Service(ApiModel):
    """spec.service: the generated Services and the routing objects."""

    model_config = ConfigDict(title="CanaryService")

    name: ServiceName | None = None
    """Apex Service name (default: targetRef.name); at most 55 characters, so that
    `<name>-primary` and `<name>-canary` are valid Service names."""
    port: PortNumber
    port_name: str | None = None
    """Default http."""
    target_port: IntOrString | None = None
    """Container port number or name (default: port)."""
    app_protocol: str | None = None
    traffic_distribution: Literal["PreferClose", "PreferSameZone", "PreferSameNode"] | None = None
    port_discovery: bool | None = None
    headless: bool | None = None
    timeout: DayDuration | None = None
    backend_timeout: Annotated[str, Field(max_length=DURATION_MAX_LENGTH)] | None = None
    mesh_name: Annotated[str, Field(max_length=253)] | None = None
    backends: Names | None = None
    gateways: Names | None = None
    gateway_refs: Annotated[list[ParentRef], Field(max_length=32)] | None = None
    hosts: Names | None = None
    delegation: bool | None = None
    traffic_policy: JsonObject | None = None
    """Istio DestinationRule trafficPolicy, passed through unchanged."""
    match: Annotated[list[HTTPMatchRequest], Field(max_length=32)] | None = None
    rewrite: HTTPRewrite | None = None
    retries: HTTPRetry | None = None
    headers: Headers | None = None
    mirror: Annotated[list[HTTPRequestMirror], Field(max_length=8)] | None = None
    cors_policy: CorsPolicy | None = None
    apex: ServiceMetadata | None = None
    primary: ServiceMetadata | None = None
    canary: ServiceMetadata | None = None
    unmanaged_metadata: UnmanagedMetadata | None = None

    def name_or(self, target: str) -> str:
        """The apex Service name, falling back to the target's name."""
        return self.name or target

    @property
    def port_name_value(self) -> str:
        return self.port_name or "http"

    @property
    def target_port_value(self) -> IntOrString:
        return self.target_port if self.target_port not in (None, "", 0) else self.port
