"""The Canary status: conditions, the decision ledger, the write-ahead intent, commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from canary.models.common import ApiModel, NonNegative, Timestamp, Weight
from canary.types import Phase


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
    dry_run: bool | None = None
    """A dryRun metric: recorded, never deciding."""
    verdict: Literal["Pass", "Fail", "Inconclusive", "NoData"] | None = None
    """Compared checks: the judge's verdict against the primary, with the numbers behind it."""
    test: Literal["rank", "dispersion", "rate", "none"] | None = None
    statistic: float | None = None
    p_value: float | None = None
    shift: float | None = None
    shift_low: float | None = None
    shift_high: float | None = None
    canary_samples: NonNegative | None = None
    primary_samples: NonNegative | None = None


class LedgerWebhook(ApiModel):
    """One webhook call of a ledger entry."""

    name: str
    type: str | None = None
    ok: bool
    status_code: int | None = None
    message: ShortText | None = None


LedgerKind = Literal[
    "initialize", "start", "restart", "wait", "advance", "halt", "promote", "promote-step",
    "complete", "rollback", "fail", "cancel", "command", "rejected", "advise",
]
"""advise: an advisory Canary's analysis reached its verdict (would promote, would roll back)."""


class LedgerScore(ApiModel):
    """The score over the compared checks of one analysis step (canary.judge.score)."""

    value: Annotated[float, Field(ge=0, le=100)] | None = None
    """100 x weight of passing / weight of passing and failing checks; absent when Inconclusive."""
    classification: Literal["Pass", "Marginal", "Fail", "Inconclusive"]
    reason: ShortText | None = None
    deciding: bool | None = None
    """analysis.score is set: the score, not each compared check, decided the step."""


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
    kind: LedgerKind | None = None
    """The kind of decision (readers use it, not the action text); absent in entries written
    before it existed (canary.ledger.kind_of reads those from the action)."""
    command: Literal["abort", "retry", "resume", "pause", "set-weight", "promote"] | None = None
    """The command of a command or rejected entry."""
    message: Message | None = None
    checks: Annotated[list[LedgerCheck], Field(max_length=LEDGER_CHECKS_MAX)] | None = None
    webhooks: Annotated[list[LedgerWebhook], Field(max_length=LEDGER_CHECKS_MAX)] | None = None
    score: LedgerScore | None = None
    """The score over the compared checks, when several were judged (or analysis.score is set)."""
    advisory_weight: Weight | None = None
    """An advisory Canary: the weight this decision would have routed (traffic stays on the
    primary; `weight` is the routed one)."""
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


class RoutesIntent(ApiModel):
    primary: Weight
    canary: Weight
    mirror: bool | None = None


class Intent(ApiModel):
    """Our addition: the state of the cluster the last written decision asked for (write-ahead
    intent). The status is written before the effects; a tick that finds the cluster short of
    this completes it (see docs/design.md, "Crash safety")."""

    routes: RoutesIntent | None = None
    target_up: bool | None = None
    """The target scaled up (True) or to zero (False); None: not decided yet."""
    primary_revision: str | None = None
    """The revision the primary must run."""


ADVISORY_CANARY = "(advisory)"
"""AdvisoryTally.check of the verdict of a whole advisory Canary (metric names cannot be this)."""
ADVISORY_TALLIES_MAX = 33


class AdvisoryTally(ApiModel):
    """How often an advisory verdict agreed with the real outcome of a release."""

    check: Annotated[str, Field(max_length=63)]
    """A dryRun metric's name, or "(advisory)" for the verdict of a whole advisory Canary."""
    agreed: NonNegative | None = None
    """Releases whose real outcome was the one this verdict said."""
    disagreed: NonNegative | None = None
    """Releases whose real outcome was the other one."""
    last_time: Timestamp | None = None
    """When the last disagreement was counted."""
    last: Message | None = None
    """The last disagreement, e.g. "would roll back (latency: Fail ...); promoted by alice"."""


class AdvisoryStatus(ApiModel):
    """Our addition: advisory verdicts (analysis.advisory, dryRun metrics) and how often they
    agreed with what really happened (docs/analysis.md, "Advisory mode")."""

    weight: Weight | None = None
    """An advisory Canary: the weight the analysis is at (virtual; nothing is routed to it)."""
    mirror: bool | None = None
    """An advisory Canary: the analysis would mirror traffic (nothing is mirrored)."""
    verdict: Literal["Promote", "Rollback"] | None = None
    """An advisory Canary: what the analysis of this run decided ("would promote", "would roll
    back"); the run waits for a person's promote or abort."""
    reason: Message | None = None
    """Why: the deciding checks."""
    time: Timestamp | None = None
    """When the verdict was reached."""
    outcome: Message | None = None
    """What really happened to this run (promoted by ..., rolled back: ...); set once, when the
    verdicts are tallied."""
    dry_run: dict[str, Literal["Pass", "Fail"]] | None = None
    """This run so far: each dryRun metric's verdict (Fail once it failed a step)."""
    tallies: Annotated[list[AdvisoryTally], Field(max_length=ADVISORY_TALLIES_MAX)] | None = None
    """Per advisory check: agreements and disagreements with the real outcome, all runs."""

    def tally(self, check: str) -> AdvisoryTally | None:
        return next((t for t in self.tallies or [] if t.check == check), None)


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
    held_since: Timestamp | None = None
    """Our addition: when metric checks began to hold the analysis (noData/onError hold,
    Inconclusive); bounded by progressDeadlineSeconds."""
    consecutive_failures: NonNegative | None = None
    """Our addition: failed checks in a row (analysis.consecutiveFailures)."""
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
    intent: Intent | None = None
    """Our addition: what the last written decision asked of the cluster (crash safety)."""
    first_step_done: bool | None = None
    """Our addition: the run took its first analysis step (pre-rollout passed); a weight of 0
    later in the run (set-weight 0) is not a new first step."""
    suspended_since: Timestamp | None = None
    """Our addition: when spec.suspend began to hold the canary (the held time does not count
    toward the progress deadline or the analysis interval)."""
    advisory: AdvisoryStatus | None = None
    """Our addition: advisory verdicts and their agreement with the real outcomes."""

    def to_patch(self, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The status as a JSON merge patch body (RFC 7386) over `previous`, the status as the
        API server holds it.

        A merge patch merges nested objects key by key: a key the new status no longer has must
        be sent as null, or the stored one stays (a stale `intent.routes.mirror: true` kept a
        blue/green switch mirrored). So every key of `previous` that is gone now, at any depth
        of nested objects, is sent as null; lists are replaced whole. Top-level fields that are
        None are always sent as null (e.g. lastFailure after a successful run).
        """
        body = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is None:
                body[info.alias or name] = None
        if body.get("phase") == "":
            # Kubernetes 1.20 rejects "" against an enum that lists it; no phase is no key
            body["phase"] = None
        if previous:
            _null_removed(previous, body)
        return body

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def _null_removed(previous: Mapping[str, Any], body: dict[str, Any]) -> None:
    """Send null for every key of `previous` that `body` lacks, in nested objects too."""
    for key, was in previous.items():
        if key not in body:
            body[key] = None
        elif isinstance(was, Mapping) and isinstance(body[key], dict):
            _null_removed(was, body[key])
