"""The per-tick context: the inputs of one tick, what it records (actions, ledger entries,
commands decided) and the small status helpers every phase uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from canary import ledger
from canary.models import (
    Analysis,
    Canary,
    CanaryStatus,
    Condition,
    Intent,
    LastCommand,
    LedgerEntry,
    LedgerKind,
    RoutesIntent,
)
from canary.types import (
    Action,
    Alert,
    CallWebhooks,
    Command,
    Event,
    MetricResult,
    Observation,
    Phase,
    Promote,
    Routes,
    ScaleTarget,
    SetRoutes,
    WebhookResult,
)

PROMOTED = "Promoted"
"""Flagger's only condition type (`kubectl wait --for=condition=promoted`)."""
STALLED = "Stalled"
"""Our condition: True while the engine cannot act (target missing, observation error ...)."""
RETRY_AFTER_MISSING_CHECKS = 1.0
"""wake_after when step() was called without the check results plan() asked for."""

PRIMARY_READINESS_CHECK = "primary-readiness"
STALLED_CHECK = "stalled"
"""lastFailure.check of a run ended because it could not go on (its target was deleted)."""
PROGRESS_DEADLINE_CHECK = "progress-deadline"
ABORT_CHECK = "abort"
"""lastFailure.check of a run rolled back by the canary.dev/abort command."""

ANALYSING = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
STEADY = (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED)

# Flagger's Promoted condition per phase (status, message); {kind} is targetRef.kind.
_PROMOTED_TEXT: dict[Phase, tuple[str, str]] = {
    Phase.INITIALIZING: ("Unknown", "New {kind} detected, starting initialization."),
    Phase.INITIALIZED: ("True", "{kind} initialization completed."),
    Phase.WAITING: ("Unknown", "Waiting for approval."),
    Phase.WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
    Phase.PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
    Phase.PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
    Phase.FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
    Phase.SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
    Phase.FAILED: ("False", "Canary analysis failed, {kind} scaled to zero."),
}


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus
    actions: list[Action] = field(default_factory=list)
    wake_after: float = 60.0
    clear: tuple[str, ...] = ()
    """Command annotations to remove once the status is written (see docs/cli.md)."""


@dataclass(frozen=True)
class _Record:
    """A decision of this tick, made a ledger entry at the end of the tick."""

    kind: LedgerKind
    action: str
    actor: str
    message: str
    checks: bool
    command: str | None


class MissingChecks(Exception):
    """step() needs a check result that the observation does not carry."""


# ---- small pure helpers ------------------------------------------------------------------


def num(value: float) -> str:
    return f"{value:g}"


def metric_failure_detail(metric: MetricResult) -> str:
    """A short, readable reason for a failed metric, e.g. ``request-success-rate 48.20 < 99``."""
    if metric.value is None:
        text = f"no values found for metric {metric.name}"
        return f"{text}: {metric.message}" if metric.message else text
    if metric.min is not None and metric.value < metric.min:
        return f"{metric.name} {metric.value:.2f} < {num(metric.min)}"
    if metric.max is not None and metric.value > metric.max:
        return f"{metric.name} {metric.value:.2f} > {num(metric.max)}"
    text = f"{metric.name} {metric.value:.2f} failed"
    return f"{text}: {metric.message}" if metric.message else text


def webhook_detail(hook: WebhookResult) -> str:
    code = f" (HTTP {hook.status_code})" if hook.status_code is not None else ""
    text = f"{hook.type or 'rollout'} check {hook.name} failed{code}"
    return f"{text}: {hook.message}" if hook.message else text


def phase_of(value: object) -> Phase | None:
    try:
        return Phase(value or "")
    except ValueError:
        return None


def copy_status(status: CanaryStatus) -> CanaryStatus:
    """A deep copy, except for the ledger's entries: they are never changed in place (the
    ledger helpers replace entries and lists), so sharing them is safe and saves most of
    the cost of copying a status with a full ledger on every tick."""
    entries = status.ledger
    shallow = status.model_copy()
    shallow.__dict__["ledger"] = None
    copy = shallow.model_copy(deep=True)
    copy.__dict__["ledger"] = list(entries) if entries is not None else None
    return copy


# ---- the tick context ----------------------------------------------------------------------


class Tick:
    """Inputs, recording and status helpers of one tick (the phases build on it)."""

    def __init__(self, canary: Canary, status: CanaryStatus | None, obs: Observation, planning: bool):
        self.canary = canary
        self.spec = canary.spec
        self.analysis = canary.spec.analysis or Analysis()
        self.obs = obs
        self.now: datetime = obs.now
        self.planning = planning
        self.st = copy_status(status) if status is not None else CanaryStatus()
        self.actions: list[Action] = []
        self.wake: float | None = None
        self.needed_hooks: list[str] = []
        self.needs_metrics = False
        self.routes: Routes | None = obs.routes
        self.records: list[_Record] = []
        self.commands: dict[str, Command] = {c.name: c for c in obs.commands}

        ns = canary.namespace
        target = self.spec.target_ref.name
        self.kind = self.spec.target_ref.kind
        self.target = f"{target}.{ns}" if ns else target
        self.primary = f"{target}-primary.{ns}" if ns else f"{target}-primary"
        self.interval = self.analysis.interval_seconds
        self.threshold = self.analysis.threshold_value

    # -- recording -------------------------------------------------------------------------

    def event(self, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal") -> None:
        self.actions.append(Event(type=type_, reason=reason, message=message))

    def alert(self, severity: Literal["info", "warn", "error"], message: str) -> None:
        self.actions.append(Alert(severity=severity, message=message))

    def route(self, primary: int, canary: int, mirror: bool = False) -> None:
        self.actions.append(SetRoutes(primary=primary, canary=canary, mirror=mirror))
        self.routes = Routes(primary=primary, canary=canary, mirrored=mirror)
        self.st.canary_weight = canary
        self.intend(routes=RoutesIntent(primary=primary, canary=canary, mirror=mirror or None))

    def scale(self, up: bool) -> None:
        self.actions.append(ScaleTarget(up=up))
        self.intend(target_up=up)

    def promote_primary(self, revision: str) -> None:
        """Copy the target (at `revision`, which the operator checks) into the primary."""
        self.actions.append(Promote(revision=revision))
        self.intend(primary_revision=revision)

    def intend(self, **fields: object) -> None:
        """Record in the status what this decision asks of the cluster: the status is written
        before the effects, so a tick that stops in between is completed by the next one."""
        current = self.st.intent or Intent()
        self.st.intent = current.model_copy(update=fields)

    def converge(self) -> None:
        """Emit again the effects of the last written decision that the cluster does not show.

        The status is written before its effects (write-ahead intent): a crash, a failed write or
        a lost Lease between the two leaves the cluster short of what the status says. The
        routes, the target's scale and the primary's revision are compared with the intent;
        what differs is done now. Routes edited by hand are put back the same way."""
        intent, obs = self.st.intent, self.obs
        if intent is None:
            return
        want = intent.routes
        if want is not None and obs.routes is not None:
            mirror = bool(want.mirror)
            if (obs.routes.primary, obs.routes.canary, obs.routes.mirrored) != (want.primary, want.canary, mirror):
                self.actions.append(SetRoutes(primary=want.primary, canary=want.canary, mirror=mirror))
                self.routes = Routes(primary=want.primary, canary=want.canary, mirrored=mirror)
            self.st.canary_weight = want.canary
        if intent.target_up is not None and obs.target is not None:
            if (obs.target.replicas > 0) != intent.target_up:
                self.actions.append(ScaleTarget(up=intent.target_up))
        rev = intent.primary_revision
        if (rev and obs.primary is not None and obs.primary_revision and obs.primary_revision != rev
                and obs.revision == rev):
            self.actions.append(Promote(revision=rev))

    def primary_short_of(self, revision: str | None) -> bool:
        """The primary is known to run another revision than `revision`."""
        return bool(revision and self.obs.primary_revision and self.obs.primary_revision != revision)

    def post_rollout(self, phase: Phase) -> None:
        if self.analysis.webhooks_of("post-rollout"):
            self.actions.append(CallWebhooks(type="post-rollout", phase=phase.value))

    def wake_in(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.wake = seconds if self.wake is None else min(self.wake, seconds)

    def record(
        self,
        kind: LedgerKind,
        message: str = "",
        actor: str = "operator",
        checks: bool = True,
        *,
        action: str | None = None,
        command: str | None = None,
    ) -> None:
        """A ledger entry for this tick's decision (phase and weight are taken at the end).
        ``action`` is the text people read (the kind when not given)."""
        self.records.append(_Record(kind, action or kind, actor, message, checks, command))

    def ledger_entries(self) -> list[LedgerEntry]:
        entries = []
        for rec in self.records:
            with_checks = rec.checks
            hooks = [h for h in self.obs.webhooks if h.type != "rollback" or h.ok]  # no-op rollback polls
            entries.append(
                LedgerEntry(
                    time=self.now,
                    phase=self.st.phase,
                    weight=self.st.canary_weight,
                    action=rec.action[:128],
                    actor=rec.actor[:128],
                    kind=rec.kind,
                    command=rec.command,
                    message=ledger.message(rec.message),
                    checks=ledger.checks_of(self.obs.metrics) if with_checks else None,
                    webhooks=ledger.webhooks_of(hooks) if with_checks else None,
                )
            )
        return entries

    # -- commands decided ------------------------------------------------------------------

    def fresh(self, name: str) -> Command | None:
        """The command annotation `name` if present and not decided yet."""
        cmd = self.commands.get(name)
        if cmd is None or (self.st.consumed_commands or {}).get(name) == cmd.id:
            return None
        return cmd

    def _consume(self, cmd: Command, result: str, message: str) -> None:
        st = self.st
        st.consumed_commands = {**(st.consumed_commands or {}), cmd.name: cmd.id}
        st.last_command = LastCommand(
            id=cmd.id,
            name=cmd.name,
            by=cmd.by or None,
            reason=cmd.reason or None,
            time=self.now,
            result=result,
            message=ledger.message(message),
        )

    def _said(self, cmd: Command) -> str:
        text = f"{cmd.name} by {cmd.who}"
        return f"{text} ({cmd.reason})" if cmd.reason else text

    def applied(self, cmd: Command, message: str) -> None:
        self._consume(cmd, "Applied", message)
        self.event("CommandApplied", f"{self._said(cmd)}: {message}")
        self.record("command", message, actor=cmd.actor, checks=False,
                    action=f"command: {cmd.name} by {cmd.by or 'unknown'}", command=cmd.name)

    def rejected(self, cmd: Command, why: str) -> None:
        self._consume(cmd, "Rejected", why)
        self.event("CommandRejected", f"{self._said(cmd)} rejected: {why}", "Warning")
        self.record("rejected", why, actor=cmd.actor, checks=False,
                    action=f"rejected: {cmd.name} by {cmd.by or 'unknown'}", command=cmd.name)

    def reject_pending_promote(self, why: str) -> None:
        cmd = self.fresh("promote")
        if cmd is not None:
            self.rejected(cmd, why)

    # -- status helpers --------------------------------------------------------------------

    def set_condition(self, type_: str, status: str, reason: str, message: str) -> None:
        conditions = self.st.conditions
        for index, cond in enumerate(conditions):
            if cond.type != type_:
                continue
            if (cond.status, cond.reason, cond.message) == (status, reason, message):
                return
            conditions[index] = cond.model_copy(
                update={
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "last_update_time": self.now,
                    "last_transition_time": (
                        self.now if cond.status != status else cond.last_transition_time
                    ),
                }
            )
            return
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_update_time=self.now,
                last_transition_time=self.now,
            )
        )

    def set_phase(self, phase: Phase, message: str | None = None) -> None:
        if self.st.phase != phase:
            self.st.phase = phase
            self.st.last_transition_time = self.now
        status, text = _PROMOTED_TEXT[phase]
        self.set_condition(PROMOTED, status, phase.value, message or text.format(kind=self.kind))

    def stall(self, reason: str, message: str) -> None:
        current = self.st.condition(STALLED)
        if current is None or current.status != "True" or current.message != message:
            self.event(reason, message, "Warning")
        self.set_condition(STALLED, "True", reason, message)
        self.wake_in(self.interval)

    def clear_stall(self) -> None:
        self.st.conditions = [c for c in self.st.conditions if c.type != STALLED]

    def sync_revision(self) -> None:
        self.st.last_applied_spec = self.obs.revision
        self.st.tracked_configs = dict(self.obs.tracked_configs) or None

    def reset_run(self) -> None:
        self.st.failed_checks = 0
        self.st.consecutive_failures = None
        self.st.held_since = None
        self.st.iterations = 0
        self.st.last_failure = None
        self.st.last_step_time = None
        self.st.waiting_since = None
        self.st.first_step_done = None

    def configs_changed(self) -> bool:
        return dict(self.obs.tracked_configs) != dict(self.st.tracked_configs or {})

    def revision_changed(self) -> bool:
        """The target differs from what this status last applied (template or configs)."""
        return bool(self.obs.revision) and (
            self.obs.revision != self.st.last_applied_spec or self.configs_changed()
        )

    def due(self) -> bool:
        """An interval has passed since the last step (or there was none)."""
        last = self.st.last_step_time
        if last is None:
            return True
        remaining = (last + timedelta(seconds=self.interval) - self.now).total_seconds()
        if remaining <= 0:
            return True
        self.wake_in(remaining)
        return False

    def take_step(self) -> None:
        self.st.last_step_time = self.now
        self.wake_in(self.interval)
