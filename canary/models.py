"""Pydantic models of the canary.dev/v1beta1 API (field-compatible with flagger.app/v1beta1).

These classes are the single source of truth for the API in Python: `canary.crd` builds the CRD
schemas from them. Rules:

* JSON name = Flagger's camelCase (the alias); Python attribute = its snake_case.
  Both are accepted on input; dumps use the alias.
* Optional fields default to None and dumps use `exclude_none`, so a manifest round-trips
  unchanged. Defaults are never written into the data; they are exposed as properties
  (`Analysis.interval_seconds`, `CanarySpec.progress_deadline`, ...).
* Unknown fields are kept (`extra="allow"`).
* Constraints (weights 0-100, duration pattern, enums) are declared with `Field` metadata so
  that pydantic and the CRD enforce the same rules.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

from canary.duration import DURATION_PATTERN, parse_duration
from canary.types import Phase

# ---- shared field types ------------------------------------------------------------------

Weight = Annotated[int, Field(ge=0, le=100)]
"""A traffic weight or a percentage: 0..100."""

NonNegative = Annotated[int, Field(ge=0)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]
"""A Go duration such as 30s, 1m or 1m30s (see canary.duration)."""

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
AlertProviderType = Literal["slack", "msteams", "discord", "rocket", "gchat", "googlechat", "generic"]
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


# ---- references ----------------------------------------------------------------------------


class TargetRef(ApiModel):
    """The workload under canary control."""

    api_version: str
    kind: Literal["Deployment", "DaemonSet", "Service"]
    name: str


class PrimaryScalerReplicas(ApiModel):
    min_replicas: Annotated[int, Field(ge=1)] | None = None
    max_replicas: Annotated[int, Field(ge=1)] | None = None


class AutoscalerRef(ApiModel):
    """HorizontalPodAutoscaler or KEDA ScaledObject copied for the primary."""

    api_version: str
    kind: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    name: str
    primary_scaler_queries: dict[str, str] | None = None
    """ScaledObject trigger name -> query to use for the primary."""
    primary_scaler_replicas: PrimaryScalerReplicas | None = None


class IngressRef(ApiModel):
    api_version: str
    kind: Literal["Ingress"]
    name: str


class RouteRef(ApiModel):
    api_version: str
    kind: Literal["ApisixRoute"]
    name: str


class UpstreamRef(ApiModel):
    api_version: str
    kind: Literal["Upstream"]
    name: str
    namespace: str | None = None


class LocalRef(ApiModel):
    """A reference by name in the same namespace (Secret)."""

    name: str


class NamespacedRef(ApiModel):
    """A reference by name, optionally in another namespace."""

    name: str
    namespace: str | None = None


# ---- service.* -----------------------------------------------------------------------------


class StringMatch(ApiModel):
    """At most one of exact, prefix, suffix, regex (RE2)."""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 1})

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"a string match takes one of exact, prefix, suffix, regex; got {given}")
        return self


class HTTPMatchRequest(ApiModel):
    """Istio-style HTTP match (service.match and analysis.match)."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    query_params: dict[str, StringMatch] | None = None
    without_headers: dict[str, StringMatch] | None = None
    port: PortNumber | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    ignore_uri_case: bool | None = None
    source_namespace: str | None = None


class HTTPRewrite(ApiModel):
    uri: str | None = None
    authority: str | None = None
    type: str | None = None
    """Gateway API only: ReplacePrefixMatch, otherwise a full path replace."""


class HTTPRetry(ApiModel):
    attempts: NonNegative | None = None
    per_try_timeout: str | None = None
    retry_on: str | None = None


class HeaderOperations(ApiModel):
    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(ApiModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class BackendRef(ApiModel):
    group: str | None = None
    kind: str | None = None
    name: Annotated[str, Field(min_length=1)]
    namespace: str | None = None
    port: PortNumber | None = None


class HTTPRequestMirror(ApiModel):
    """Gateway API static request mirror (not the analysis mirroring)."""

    backend_ref: BackendRef


class CorsPolicy(ApiModel):
    allow_origin: list[str] | None = None
    allow_origins: list[StringMatch] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: str | None = None
    allow_credentials: bool | None = None


class ParentRef(ApiModel):
    """Gateway API parentRef of the generated HTTPRoute."""

    group: str | None = None
    """Default gateway.networking.k8s.io."""
    kind: str | None = None
    """Default Gateway."""
    name: Annotated[str, Field(min_length=1)]
    namespace: str | None = None
    section_name: str | None = None
    port: PortNumber | None = None

    @property
    def group_value(self) -> str:
        return self.group if self.group is not None else "gateway.networking.k8s.io"

    @property
    def kind_value(self) -> str:
        return self.kind or "Gateway"


class ServiceMetadata(ApiModel):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class UnmanagedMetadata(ApiModel):
    """Label and annotation keys left alone on the Services the operator owns."""

    labels: list[str] | None = None
    annotations: list[str] | None = None


class Service(ApiModel):
    """spec.service: the generated Services and the routing objects."""

    model_config = ConfigDict(title="CanaryService")

    name: str | None = None
    """Apex Service name (default: targetRef.name)."""
    port: PortNumber
    port_name: str | None = None
    """Default http."""
    target_port: IntOrString | None = None
    """Container port number or name (default: port)."""
    app_protocol: str | None = None
    traffic_distribution: Literal["PreferClose", "PreferSameZone", "PreferSameNode"] | None = None
    port_discovery: bool | None = None
    headless: bool | None = None
    timeout: Duration | None = None
    backend_timeout: str | None = None
    mesh_name: str | None = None
    backends: list[str] | None = None
    gateways: list[str] | None = None
    gateway_refs: Annotated[list[ParentRef], Field(max_length=32)] | None = None
    hosts: list[str] | None = None
    delegation: bool | None = None
    traffic_policy: JsonObject | None = None
    """Istio DestinationRule trafficPolicy, passed through unchanged."""
    match: list[HTTPMatchRequest] | None = None
    rewrite: HTTPRewrite | None = None
    retries: HTTPRetry | None = None
    headers: Headers | None = None
    mirror: list[HTTPRequestMirror] | None = None
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


# ---- analysis.* ----------------------------------------------------------------------------


class SessionAffinity(ApiModel):
    cookie_name: str
    primary_cookie_name: str | None = None
    domain: str | None = None
    http_only: bool | None = None
    max_age: NonNegative | None = None
    """Seconds; default 86400."""
    partitioned: bool | None = None
    path: str | None = None
    same_site: Literal["Strict", "Lax", "None"] | None = None
    secure: bool | None = None

    @property
    def max_age_value(self) -> int:
        return self.max_age if self.max_age else 86400


class ThresholdRange(ApiModel):
    min: float | None = None
    max: float | None = None


class Metric(ApiModel):
    name: str
    """request-success-rate and request-duration are built in; others need templateRef or query."""
    interval: Duration | None = None
    threshold: float | None = None
    """Deprecated: use thresholdRange."""
    threshold_range: ThresholdRange | None = None
    query: str | None = None
    """Deprecated inline PromQL."""
    template_ref: NamespacedRef | None = None
    template_variables: dict[str, str] | None = None

    def interval_or(self, default: str = "1m") -> str:
        return self.interval or default


class Webhook(ApiModel):
    name: str
    url: str
    type: WebhookTypeName | None = None
    """Empty or missing means rollout."""
    timeout: Duration | None = None
    """Default 10s."""
    retries: NonNegative | None = None
    disable_tls: bool | None = Field(default=None, alias="disableTLS")
    mute_alert: bool | None = None
    metadata: dict[str, str] | None = None

    @property
    def type_value(self) -> str:
        return self.type or "rollout"

    @property
    def timeout_seconds(self) -> float:
        try:
            return parse_duration(self.timeout) if self.timeout else 10.0
        except ValueError:
            return 10.0


class Alert(ApiModel):
    name: str
    provider_ref: NamespacedRef
    severity: Severity | None = None
    """Default info."""

    @property
    def severity_value(self) -> str:
        return self.severity or "info"


class Analysis(ApiModel):
    """spec.analysis: how a new revision is tested and promoted."""

    model_config = ConfigDict(title="CanaryAnalysis")

    interval: Duration | None = None
    """Time between analysis steps (default 60s, minimum 1s)."""
    threshold: NonNegative | None = None
    """Failed checks before rollback (default 1)."""
    max_weight: Weight | None = None
    step_weight: Weight | None = None
    step_weights: list[Weight] | None = None
    step_weight_promotion: Weight | None = None
    iterations: NonNegative | None = None
    match: list[HTTPMatchRequest] | None = None
    mirror: bool | None = None
    mirror_weight: Weight | None = None
    primary_ready_threshold: Weight | None = None
    canary_ready_threshold: Weight | None = None
    session_affinity: SessionAffinity | None = None
    metrics: list[Metric] | None = None
    webhooks: list[Webhook] | None = None
    alerts: list[Alert] | None = None

    @property
    def interval_seconds(self) -> float:
        """Default 60s when missing or unparsable; at least 1s (Flagger clamps to 10s)."""
        if not self.interval:
            return 60.0
        try:
            return max(1.0, parse_duration(self.interval))
        except ValueError:
            return 60.0

    @property
    def threshold_value(self) -> int:
        return self.threshold if self.threshold and self.threshold > 0 else 1

    @property
    def max_weight_value(self) -> int:
        if self.step_weights:
            return min(100, self.step_weights[-1])
        return self.max_weight if self.max_weight and self.max_weight > 0 else 100

    @property
    def primary_ready_threshold_value(self) -> int:
        return 100 if self.primary_ready_threshold is None else self.primary_ready_threshold

    @property
    def canary_ready_threshold_value(self) -> int:
        return 100 if self.canary_ready_threshold is None else self.canary_ready_threshold

    @property
    def strategy(self) -> Strategy:
        iterations = self.iterations or 0
        if iterations > 0 and self.match:
            return "ab"
        if iterations > 0:
            return "bluegreen"
        return "canary"

    def webhooks_of(self, type_: str) -> list[Webhook]:
        """Webhooks of one type, in spec order ("" counts as rollout)."""
        return [w for w in self.webhooks or [] if w.type_value == type_]


# ---- Canary ----------------------------------------------------------------------------------


class CanarySpec(ApiModel):
    """The desired release process for one workload."""

    # Flagger's schema requires analysis; the model keeps it optional (skipAnalysis semantics).
    model_config = ConfigDict(json_schema_extra={"required": ["targetRef", "analysis"]})

    provider: Provider | None = None
    """Routing provider for this canary (overrides the operator default)."""
    metrics_server: str | None = None
    """Prometheus URL for the built-in metrics (overrides the operator default)."""
    target_ref: TargetRef
    autoscaler_ref: AutoscalerRef | None = None
    ingress_ref: IngressRef | None = None
    route_ref: RouteRef | None = None
    upstream_ref: UpstreamRef | None = None
    service: Service | None = None
    analysis: Analysis | None = None
    progress_deadline_seconds: NonNegative | None = None
    """Seconds a rollout may take before it counts as failed (default 600)."""
    skip_analysis: bool | None = None
    revert_on_deletion: bool | None = None
    suspend: bool | None = None

    @property
    def progress_deadline(self) -> int:
        return self.progress_deadline_seconds if self.progress_deadline_seconds is not None else 600

    @property
    def analysis_skipped(self) -> bool:
        return bool(self.skip_analysis) or self.analysis is None

    @property
    def service_name(self) -> str:
        return self.service.name_or(self.target_ref.name) if self.service else self.target_ref.name


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str | None = None
    last_update_time: Timestamp | None = None
    last_transition_time: Timestamp | None = None


class LastFailure(ApiModel):
    """Why the last run was rolled back (our addition)."""

    time: Timestamp
    check: str
    """The failing check: a metric name, a webhook name, or e.g. progress-deadline."""
    value: float | None = None
    message: str


LEDGER_LIMIT = 50
"""status.ledger keeps the last LEDGER_LIMIT entries; older ones are counted in ledgerSummary."""
LEDGER_CHECKS_MAX = 20
QUERY_MAX = 1000
MESSAGE_MAX = 512

ShortText = Annotated[str, Field(max_length=256)]
Message = Annotated[str, Field(max_length=MESSAGE_MAX)]


class LedgerCheck(ApiModel):
    """One metric check of a ledger entry, as executed."""

    name: str
    query: Annotated[str, Field(max_length=QUERY_MAX)] | None = None
    """The query as executed (whitespace collapsed). Left out when it is the same as the last
    query recorded for this check in an earlier entry of the ledger."""
    value: float | None = None
    min: float | None = None
    max: float | None = None
    ok: bool
    message: ShortText | None = None


class LedgerWebhook(ApiModel):
    """One webhook call of a ledger entry."""

    name: str
    type: str | None = None
    ok: bool
    status_code: int | None = None
    message: ShortText | None = None


class LedgerEntry(ApiModel):
    """One decision of the operator (or of a user through a command)."""

    time: Timestamp
    phase: Phase
    """The phase after the decision."""
    weight: Weight
    """The canary weight routed after the decision."""
    action: Annotated[str, Field(max_length=128)]
    """What was decided: start, advance 20, halt, wait-gate, promote, complete, rollback,
    command: abort by alice, rejected: promote by bob, ..."""
    actor: Annotated[str, Field(max_length=128)]
    """operator, webhook:<name> or user:<name>."""
    message: Message | None = None
    checks: Annotated[list[LedgerCheck], Field(max_length=LEDGER_CHECKS_MAX)] | None = None
    webhooks: Annotated[list[LedgerWebhook], Field(max_length=LEDGER_CHECKS_MAX)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    """Identical consecutive decisions (e.g. waiting at a gate) merged into this entry."""
    last_time: Timestamp | None = None
    """Time of the last merged decision."""


class LedgerSummary(ApiModel):
    """What was dropped from the front of status.ledger."""

    entries: NonNegative
    first_time: Timestamp
    """Time of the first entry ever recorded."""
    last_time: Timestamp
    """Time of the newest dropped entry."""
    advances: NonNegative
    halts: NonNegative
    rollbacks: NonNegative
    promotions: NonNegative
    commands: NonNegative


class PauseState(ApiModel):
    """Set while the canary.dev/pause annotation holds the canary."""

    since: Timestamp
    by: ShortText | None = None
    reason: ShortText | None = None


class LastCommand(ApiModel):
    """The last command annotation the operator decided."""

    id: str
    name: str
    by: ShortText | None = None
    reason: ShortText | None = None
    time: Timestamp
    result: Literal["Applied", "Rejected"]
    message: Message | None = None


class CanaryStatus(ApiModel):
    """Observed state of a canary release."""

    # Assignments are validated: `status.phase = "Progressing"` stores Phase.PROGRESSING and a
    # naive datetime becomes UTC, so the engine can mutate a copy safely.
    model_config = ConfigDict(validate_assignment=True)

    phase: Phase = Phase.BLANK
    failed_checks: NonNegative = 0
    canary_weight: Weight = 0
    iterations: NonNegative = 0
    tracked_configs: dict[str, str] | None = None
    """"configmap/<name>" or "secret/<name>" -> checksum."""
    last_applied_spec: str | None = None
    last_promoted_spec: str | None = None
    last_transition_time: Timestamp | None = None
    session_affinity_cookie: str | None = None
    primary_session_affinity_cookie: str | None = None
    previous_session_affinity_cookie: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    last_failure: LastFailure | None = None
    """Our addition: the check that caused the last rollback."""
    last_step_time: Timestamp | None = None
    """Our addition: time of the last analysis step."""
    waiting_since: Timestamp | None = None
    """Our addition: when the current readiness wait began."""
    observed_generation: int | None = None
    """Our addition: metadata.generation of the spec this status reflects."""
    ledger: Annotated[list[LedgerEntry], Field(max_length=LEDGER_LIMIT)] | None = None
    """Our addition: the last decisions, oldest first (see `canary explain`)."""
    ledger_summary: LedgerSummary | None = None
    """Our addition: counts of the entries dropped from the ledger."""
    paused: PauseState | None = None
    """Our addition: the canary is held by the canary.dev/pause annotation."""
    last_command: LastCommand | None = None
    """Our addition: the last command annotation decided."""
    consumed_commands: dict[str, str] | None = None
    """Our addition: command name -> id of the annotation value already decided. Kept until the
    annotation is gone, so that a value seen again is never acted on twice."""

    def to_patch(self) -> dict[str, Any]:
        """The status as a JSON merge patch body.

        Top-level fields that are None are sent as null so that the patch clears them
        (e.g. lastFailure after a successful run); nested None values are left out.
        """
        body = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is None:
                body[info.alias or name] = None
        if body.get("phase") == "":
            # Kubernetes 1.20 rejects "" against an enum that lists it; no phase is no key
            body["phase"] = None
        return body

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class Canary(ApiModel):
    """A progressive delivery of a Deployment (canary, A/B testing or blue/green)."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CanarySpec
    status: CanaryStatus | None = None

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Canary:
        return cls.model_validate(obj)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))


# ---- MetricTemplate ----------------------------------------------------------------------


class MetricProvider(ApiModel):
    type: MetricProviderType
    address: str | None = None
    headers: dict[str, list[str]] | None = None
    """HTTP headers sent with every query."""
    secret_ref: LocalRef | None = None
    region: str | None = None
    insecure_skip_verify: bool | None = None


class MetricTemplateSpec(ApiModel):
    provider: MetricProvider
    query: str
    """Query rendered with {{ name }}, {{ namespace }}, {{ target }}, {{ interval }}, {{ variables.x }} ..."""


class MetricTemplate(ApiModel):
    """A reusable metric query against a metrics provider."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MetricTemplateSpec

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> MetricTemplate:
        return cls.model_validate(obj)


# ---- AlertProvider -------------------------------------------------------------------------


class AlertProviderSpec(ApiModel):
    # Flagger: oneOf [type+address] | [type+secretRef]. We accept both together (anyOf).
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["address"]}, {"required": ["secretRef"]}]}
    )
    type: AlertProviderType
    """googlechat and generic are our additions to Flagger's list."""
    channel: str | None = None
    """Default general."""
    username: str | None = None
    """Default flagger."""
    address: str | None = None
    """Webhook URL (the Secret key address overrides it)."""
    proxy: str | None = None
    secret_ref: LocalRef | None = None

    @model_validator(mode="after")
    def _address_or_secret(self) -> AlertProviderSpec:
        if self.address is None and self.secret_ref is None:
            raise ValueError("an alert provider needs address or secretRef")
        return self

    @property
    def channel_value(self) -> str:
        return self.channel or "general"

    @property
    def username_value(self) -> str:
        return self.username or "flagger"


class AlertProvider(ApiModel):
    """Where analysis alerts are sent (chat or a generic webhook)."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AlertProviderSpec

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> AlertProvider:
        return cls.model_validate(obj)
