"""spec.analysis: metrics, webhooks, alerts, steps and session affinity."""

from __future__ import annotations

import re as _re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from canary.duration import parse_duration
from canary.models.common import (
    COOKIE_DOMAIN,
    COOKIE_NAME,
    COOKIE_PATH,
    ITERATIONS_MAX,
    THRESHOLD_MAX,
    VARIABLE_NAME,
    WEBHOOK_RETRIES_MAX,
    WEBHOOK_TIMEOUT_MAX,
    ApiModel,
    DayDuration,
    Duration,
    Int32,
    Label,
    PositiveWeight,
    Query,
    Severity,
    Strategy,
    StringMap,
    Url,
    Value,
    WebhookTypeName,
    Weight,
    _at_most,
    _list_map,
    _unique_names,
)
from canary.models.refs import NamespacedRef
from canary.models.service import HTTPMatchRequest


CookieName = Annotated[str, Field(pattern=COOKIE_NAME, max_length=256)]


class SessionAffinity(ApiModel):
    """Cookie attributes may not carry ';' or '=' (they would add attributes of their own)."""

    cookie_name: CookieName
    primary_cookie_name: CookieName | None = None
    domain: Annotated[str, Field(pattern=COOKIE_DOMAIN, max_length=253)] | None = None
    http_only: bool | None = None
    max_age: Int32 | None = None
    """Seconds; default 86400."""
    partitioned: bool | None = None
    path: Annotated[str, Field(pattern=COOKIE_PATH, max_length=1024)] | None = None
    same_site: Literal["Strict", "Lax", "None"] | None = None
    secure: bool | None = None

    @property
    def max_age_value(self) -> int:
        return self.max_age if self.max_age else 86400


class ThresholdRange(ApiModel):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"thresholdRange min {self.min} is greater than max {self.max}: no value can pass")
        return self


class MetricCompare(ApiModel):
    """Judge the canary against the primary (docs/analysis.md). Defaults are properties."""

    baseline: Literal["primary"] | None = None
    """What the canary is compared with: the same query for <target>-primary (default)."""
    direction: Literal["increase", "decrease", "either"] | None = None
    """increase (default: higher is worse), decrease (lower is worse) or either."""
    tolerance: Annotated[float, Field(ge=0, le=1000)] | None = None
    """Percent of the primary's median by which the canary may be worse (default 10)."""
    confidence: Annotated[float, Field(ge=0.5, le=0.999)] | None = None
    """Confidence needed to fail a check (default 0.95)."""
    min_samples: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Fewer samples on a side: Inconclusive, never a silent pass (default 10)."""
    warmup: Duration | None = None
    """Samples this close after a weight change are left out (default 0s)."""

    @property
    def warmup_seconds(self) -> float:
        try:
            return parse_duration(self.warmup) if self.warmup else 0.0
        except ValueError:
            return 0.0


class AnalysisScore(ApiModel):
    """Decide a step by the score over its compared checks (Kayenta's classifier), not by each
    compared check alone (docs/analysis.md). Fixed bounds, noData and onError still apply per
    check."""

    pass_: Annotated[float, Field(ge=0, le=100)] | None = Field(default=None, alias="pass")
    """Score at or above this: the step passes (default 75)."""
    marginal: Annotated[float, Field(ge=0, le=100)] | None = None
    """Score at or above this (and below pass): the step holds, no failure counted (default 50);
    below it the step fails."""
    weights: Annotated[dict[str, Annotated[float, Field(ge=0, le=1000)]], Field(max_length=32)] | None = None
    """Compared metric name -> its weight in the score (default 1)."""
    critical: Annotated[list[Label], Field(max_length=32)] | None = None
    """Compared metrics whose Fail makes the score 0."""

    @model_validator(mode="after")
    def _ordered(self) -> AnalysisScore:
        if self.marginal_value > self.pass_value:
            raise ValueError(f"score marginal {self.marginal_value:g} is above pass {self.pass_value:g}")
        return self

    @property
    def pass_value(self) -> float:
        return 75.0 if self.pass_ is None else float(self.pass_)

    @property
    def marginal_value(self) -> float:
        return 50.0 if self.marginal is None else float(self.marginal)


class Metric(ApiModel):
    name: Label
    """request-success-rate and request-duration are built in; others need templateRef or query."""
    interval: DayDuration | None = None
    threshold: float | None = None
    """Deprecated: use thresholdRange."""
    threshold_range: ThresholdRange | None = None
    query: Query | None = None
    """Deprecated inline PromQL."""
    template_ref: NamespacedRef | None = None
    template_variables: Annotated[dict[str, Value], Field(max_length=32)] | None = None
    """Rendered into the template's query as {{ variables.<name> }}, escaped for a PromQL string."""
    compare: MetricCompare | None = None
    """Judge the canary against the primary besides (or instead of) a fixed bound."""
    no_data: Literal["fail", "pass", "hold"] | None = None
    """A check without data: fail (default, as Flagger), pass, or hold until progressDeadlineSeconds."""
    on_error: Literal["fail", "hold"] | None = None
    """A query that cannot run: fail (default) or hold until progressDeadlineSeconds."""
    dry_run: bool | None = None
    """Evaluated, recorded and alerted as advisory, never deciding."""

    @model_validator(mode="after")
    def _variable_names(self) -> Metric:
        for key in self.template_variables or {}:
            if len(key) > 63 or not _re.fullmatch(VARIABLE_NAME, key):
                raise ValueError(f"templateVariables key {key[:80]!r} may only hold letters, digits, '_', '.' and '-'")
        return self

    def interval_or(self, default: str = "1m") -> str:
        return self.interval or default


class Webhook(ApiModel):
    name: Label
    url: Url
    type: WebhookTypeName | None = None
    """Empty or missing means rollout."""
    timeout: Annotated[Duration, _at_most(WEBHOOK_TIMEOUT_MAX)] | None = None
    """Default 10s, at most 10m."""
    retries: Annotated[int, Field(ge=0, le=WEBHOOK_RETRIES_MAX)] | None = None
    """At most 10."""
    disable_tls: bool | None = Field(default=None, alias="disableTLS")
    mute_alert: bool | None = None
    metadata: StringMap | None = None

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
    name: Label
    provider_ref: NamespacedRef
    severity: Severity | None = None
    """Default info."""

    @property
    def severity_value(self) -> str:
        return self.severity or "info"


class Analysis(ApiModel):
    """spec.analysis: how a new revision is tested and promoted."""

    model_config = ConfigDict(title="CanaryAnalysis")

    interval: DayDuration | None = None
    """Time between analysis steps (default 60s, minimum 1s, maximum 24h)."""
    threshold: Annotated[int, Field(ge=0, le=THRESHOLD_MAX)] | None = None
    """Failed checks before rollback (default 1)."""
    max_weight: PositiveWeight | None = None
    step_weight: PositiveWeight | None = None
    step_weights: Annotated[list[PositiveWeight], Field(max_length=100)] | None = None
    """Strictly increasing."""
    step_weight_promotion: PositiveWeight | None = None
    iterations: Annotated[int, Field(ge=0, le=ITERATIONS_MAX)] | None = None
    match: Annotated[list[HTTPMatchRequest], Field(max_length=32)] | None = None
    """A/B testing: needs iterations."""
    mirror: bool | None = None
    mirror_weight: Weight | None = None
    primary_ready_threshold: Weight | None = None
    canary_ready_threshold: PositiveWeight | None = None
    session_affinity: SessionAffinity | None = None
    metrics: Annotated[list[Metric], _list_map(32)] | None = None
    webhooks: Annotated[list[Webhook], _list_map(32)] | None = None
    alerts: Annotated[list[Alert], _list_map(16)] | None = None
    consecutive_failures: Annotated[int, Field(ge=0, le=THRESHOLD_MAX)] | None = None
    """0 (default): Flagger's cumulative threshold only; N: fail after N failed checks in a row."""
    advisory: bool | None = None
    """Decide and record everything, never shift traffic."""
    score: AnalysisScore | None = None
    """Decide each step by the score over its compared checks (default: each check alone;
    the score is then only recorded)."""

    @model_validator(mode="after")
    def _possible(self) -> Analysis:
        """What the schema cannot say: a spec no release could follow as written."""
        steps = self.step_weights or []
        for a, b in zip(steps, steps[1:]):
            if b <= a:
                raise ValueError(f"stepWeights must be strictly increasing, got {steps}")
        if self.match and not self.iterations:
            raise ValueError("match (A/B testing) needs iterations; without them it would be ignored")
        _unique_names(self.metrics, "metric")
        _unique_names(self.webhooks, "webhook")
        _unique_names(self.alerts, "alert")
        if self.score is not None:
            compared = {m.name for m in self.metrics or [] if m.compare is not None}
            for name in [*(self.score.weights or {}), *(self.score.critical or [])]:
                if name not in compared:
                    raise ValueError(f"score names {name[:80]!r}, which is not a compared metric (with compare)")
        return self

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
