"""The canary state machine (pure: no I/O, no clock, no randomness).

Two entry points, called by the operator once per tick with the same canary, status and
observation:

* ``plan(canary, status, obs) -> CheckPlan``: which webhook types (in call order) and whether
  the metrics must be run before this tick can be decided. Checks are listed as if every
  earlier one passes; the operator may stop a type at its first failure.
* ``step(canary, status, obs) -> Decision``: the new status (a copy; the input is never
  mutated), the actions to apply in order and the seconds until the engine wants to be called
  again (the operator also calls it on watch events).

Both run the same code: ``plan`` executes the tick in "planning" mode, where every check
records that it is needed and answers "carry on". So the plan and the decision can never
disagree about which checks a tick uses.

The phases and transitions are Flagger's (``flagger.app/v1beta1``), with these deliberate
differences (also listed in docs/design.md):

* Weights never overshoot ``maxWeight``: the last step is clamped.
* ``status.canaryWeight`` always equals the routed weight (``obs.routes`` at the start of the
  tick, or the weight of the ``SetRoutes`` emitted by the tick). In A/B and Blue/Green a
  switch to the canary therefore reads 100.
* A rollback keeps ``failedChecks`` and records ``lastFailure`` (check, value, message); the
  ``Promoted`` condition names the deciding check. Every failure path sends an error alert
  (Flagger sends none for a canary that never becomes ready).
* Rollback happens in the tick whose failure reaches the threshold (Flagger waits for the
  next tick), so the time to roll back is ``interval * (threshold - 1)`` after the first
  failing step. A user setting ``status.failedChecks >= threshold`` aborts the run (#1467).
* Rollback webhooks are consulted before the canary readiness wait, so a manual rollback
  works while the canary is stuck (#1268).
* Waiting for readiness is bounded by ``progressDeadlineSeconds`` measured from
  ``status.waitingSince``; a Deployment's own ProgressDeadlineExceeded fails at once.
* Initialization waits for the primary to be ready even with ``skipAnalysis`` (Flagger flips
  traffic to a primary that is not ready yet). If the primary never becomes ready the canary
  is Failed and traffic is routed to the target (0/100), which still runs; a later change
  of the target re-runs the initialization.
* If the target is reverted to the promoted revision during a run (or while waiting for
  approval) the run is cancelled: routes 100/0, the target scaled down, phase Succeeded.
  (Flagger would go on analysing the promoted spec against itself.)
* The confirm-rollout gate is re-polled at most once per interval while Waiting.
* Gate alerts for Waiting and WaitingPromotion are sent once, on entering the phase (Flagger
  repeats them every tick).
* The primary's readiness is only checked while Initializing, Promoting and Finalising.
  A new run resets routes to 100/0 only when the primary is ready, so after a failed
  promotion (traffic 0/100 on the canary) a fixed revision is promoted forward instead of
  sending traffic to a broken primary.
* stepWeightPromotion applies to the canary and Blue/Green strategies; A/B switches back at once.

Decision ledger (our addition): every tick that decides something appends an entry to
``status.ledger`` (time, phase and weight after the decision, action, actor, message, and the
metric and webhook results the tick used); see ``canary.ledger`` for how it stays small.
Ticks that decide nothing (between intervals, waiting for readiness, held by a pause) leave
the status exactly as it was, so the operator writes nothing.

Commands (our addition): ``obs.commands`` carries the ``canary.dev/<name>`` annotations
(see docs/cli.md). They are decided here in a fixed order (abort, retry, resume, pause,
set-weight, promote), at most one applied per tick; the others are decided on the next tick
(at once) against the new state:

* A decided command (applied or rejected) records the annotation value's id in
  ``status.consumedCommands`` and in ``status.lastCommand``, emits an event naming who asked,
  and adds a ledger entry. ``Decision.clear`` lists the annotations the operator must remove
  *after* writing the status. A value whose id is already recorded is never acted on again,
  so an annotation that could not be cleared (operator restart, conflict) is only cleared
  the next time. The id is forgotten once the annotation is gone, so the same plain value
  can be given again later.
* Commands that make no sense in the phase are rejected (Warning event) and cleared.
* ``promote`` (Waiting, Progressing, WaitingPromotion) skips the remaining analysis and gates
  and promotes as soon as the canary is ready; until then the annotation stays (a rollback,
  a failed deadline or a new revision rejects it). ``abort`` rolls back at once with the
  given reason (check ``abort`` in lastFailure). ``retry`` (Failed) runs the same revision
  again (Flagger #862). ``set-weight`` routes N (0..maxWeight, canary strategy, canary ready)
  and the analysis continues from N one interval later.
* ``pause`` stays until removed (``resume`` removes it too). While paused nothing happens
  but commands and rollback webhooks: no analysis step, no new run, no deadline. On resume
  ``waitingSince`` and ``lastStepTime`` move forward by the paused time, so the pause does not
  count toward progressDeadlineSeconds or the analysis interval.
"""

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
    LastCommand,
    LastFailure,
    LedgerEntry,
    PauseState,
)
from canary.types import (
    COMMAND_NAMES,
    Action,
    Alert,
    CallWebhooks,
    CheckPlan,
    Command,
    Event,
    Initialize,
    MetricResult,
    Observation,
    Phase,
    Promote,
    Readiness,
    Ready,
    Routes,
    ScaleTarget,
    SetRoutes,
    WebhookResult,
)

__all__ = [
    "Decision",
    "plan",
    "step",
    "next_weight",
    "metric_failure_detail",
    "PROMOTED",
    "STALLED",
    "PRIMARY_READINESS_CHECK",
    "PROGRESS_DEADLINE_CHECK",
    "ABORT_CHECK",
    "RETRY_AFTER_MISSING_CHECKS",
]

PROMOTED = "Promoted"
"""Flagger's only condition type (`kubectl wait --for=condition=promoted`)."""
STALLED = "Stalled"
"""Our condition: True while the engine cannot act (target missing, observation error ...)."""
RETRY_AFTER_MISSING_CHECKS = 1.0
"""wake_after when step() was called without the check results plan() asked for."""

PRIMARY_READINESS_CHECK = "primary-readiness"
PROGRESS_DEADLINE_CHECK = "progress-deadline"
ABORT_CHECK = "abort"
"""lastFailure.check of a run rolled back by the canary.dev/abort command."""

_ANALYSING = (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
_STEADY = (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED)

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
    """Command annotations to remove once the status is written (see the module docstring)."""


class _MissingChecks(Exception):
    """step() needs a check result that the observation does not carry."""


# ---- small pure helpers ------------------------------------------------------------------


def next_weight(analysis: Analysis, current: int) -> int:
    """The canary weight after one more step, never above the max weight.

    stepWeights: the smallest listed weight above ``current``; stepWeight: ``current + step``.
    A missing or zero step jumps to the max weight.
    """
    max_weight = analysis.max_weight_value
    if analysis.step_weights:
        higher = [w for w in sorted(set(analysis.step_weights)) if w > current]
        target = higher[0] if higher else max_weight
    elif analysis.step_weight and analysis.step_weight > 0:
        target = current + analysis.step_weight
    else:
        target = max_weight
    return max(0, min(target, max_weight))


def _num(value: float) -> str:
    return f"{value:g}"


def metric_failure_detail(metric: MetricResult) -> str:
    """A short, readable reason for a failed metric, e.g. ``request-success-rate 48.20 < 99``."""
    if metric.value is None:
        text = f"no values found for metric {metric.name}"
        return f"{text}: {metric.message}" if metric.message else text
    if metric.min is not None and metric.value < metric.min:
        return f"{metric.name} {metric.value:.2f} < {_num(metric.min)}"
    if metric.max is not None and metric.value > metric.max:
        return f"{metric.name} {metric.value:.2f} > {_num(metric.max)}"
    text = f"{metric.name} {metric.value:.2f} failed"
    return f"{text}: {metric.message}" if metric.message else text


def _webhook_detail(hook: WebhookResult) -> str:
    code = f" (HTTP {hook.status_code})" if hook.status_code is not None else ""
    text = f"{hook.type or 'rollout'} check {hook.name} failed{code}"
    return f"{text}: {hook.message}" if hook.message else text


def _phase(value: object) -> Phase | None:
    try:
        return Phase(value or "")
    except ValueError:
        return None


def _copy_status(status: CanaryStatus) -> CanaryStatus:
    """A deep copy, except for the ledger's entries: they are never changed in place (the
    ledger helpers replace entries and lists), so sharing them is safe and saves most of
    the cost of copying a status with a full ledger on every tick."""
    ledger = status.ledger
    shallow = status.model_copy()
    shallow.__dict__["ledger"] = None
    copy = shallow.model_copy(deep=True)
    copy.__dict__["ledger"] = list(ledger) if ledger is not None else None
    return copy


# ---- one tick ----------------------------------------------------------------------------


class _Tick:
    def __init__(self, canary: Canary, status: CanaryStatus | None, obs: Observation, planning: bool):
        self.canary = canary
        self.spec = canary.spec
        self.analysis = canary.spec.analysis or Analysis()
        self.obs = obs
        self.now: datetime = obs.now
        self.planning = planning
        self.st = _copy_status(status) if status is not None else CanaryStatus()
        self.actions: list[Action] = []
        self.wake: float | None = None
        self.needed_hooks: list[str] = []
        self.needs_metrics = False
        self.routes: Routes | None = obs.routes
        self.records: list[tuple[str, str, str, bool]] = []  # action, actor, message, with checks
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

    def scale(self, up: bool) -> None:
        self.actions.append(ScaleTarget(up=up))

    def post_rollout(self, phase: Phase) -> None:
        if self.analysis.webhooks_of("post-rollout"):
            self.actions.append(CallWebhooks(type="post-rollout", phase=phase.value))

    def wake_in(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.wake = seconds if self.wake is None else min(self.wake, seconds)

    def record(self, action: str, message: str = "", actor: str = "operator", checks: bool = True) -> None:
        """A ledger entry for this tick's decision (phase and weight are taken at the end)."""
        self.records.append((action, actor, message, checks))

    def ledger_entries(self) -> list[LedgerEntry]:
        entries = []
        for action, actor, message, with_checks in self.records:
            hooks = [h for h in self.obs.webhooks if h.type != "rollback" or h.ok]  # no-op rollback polls
            entries.append(
                LedgerEntry(
                    time=self.now,
                    phase=self.st.phase,
                    weight=self.st.canary_weight,
                    action=action[:128],
                    actor=actor[:128],
                    message=ledger.message(message),
                    checks=ledger.checks_of(self.obs.metrics) if with_checks else None,
                    webhooks=ledger.webhooks_of(hooks) if with_checks else None,
                )
            )
        return entries

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
        self.st.iterations = 0
        self.st.last_failure = None
        self.st.last_step_time = None
        self.st.waiting_since = None

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

    # -- checks ----------------------------------------------------------------------------

    def _need(self, type_: str) -> None:
        if type_ not in self.needed_hooks:
            self.needed_hooks.append(type_)

    def gate(self, type_: str) -> tuple[WebhookResult | None, bool]:
        """Run the webhooks of one type: (first failure or None, muted alert)."""
        hooks = self.analysis.webhooks_of(type_)
        if not hooks:
            return None, False
        if self.planning:
            self._need(type_)
            return None, False
        results = {r.name: r for r in self.obs.webhooks if (r.type or "rollout") == type_}
        for hook in hooks:
            result = results.get(hook.name)
            if result is not None and not result.ok:
                return result, bool(hook.mute_alert)
        if any(hook.name not in results for hook in hooks):
            raise _MissingChecks(type_)
        return None, False

    def rollback_requested(self) -> WebhookResult | None:
        hooks = self.analysis.webhooks_of("rollback")
        if not hooks:
            return None
        if self.planning:
            self._need("rollback")
            return None
        results = {r.name: r for r in self.obs.webhooks if r.type == "rollback"}
        for hook in hooks:
            result = results.get(hook.name)
            if result is not None and result.ok:
                return result
        if any(hook.name not in results for hook in hooks):
            raise _MissingChecks("rollback")
        return None

    def failed_metric(self) -> MetricResult | None:
        specs = self.analysis.metrics or []
        if not specs:
            return None
        if self.planning:
            self.needs_metrics = True
            return None
        if self.obs.metrics is None:
            raise _MissingChecks("metrics")
        for metric in self.obs.metrics:
            if not metric.ok or metric.value is None:
                return metric
        seen = {m.name for m in self.obs.metrics}
        if any(spec.name not in seen for spec in specs):
            raise _MissingChecks("metrics")
        return None

    # -- commands ----------------------------------------------------------------------------

    def fresh(self, name: str) -> Command | None:
        """The command annotation `name` if present and not decided yet."""
        cmd = self.commands.get(name)
        if cmd is None or (self.st.consumed_commands or {}).get(name) == cmd.id:
            return None
        return cmd

    def prune_commands(self) -> None:
        """Forget the ids of decided commands whose annotation is gone (or has a new value)."""
        consumed = self.st.consumed_commands or {}
        keep = {k: v for k, v in consumed.items() if k in self.commands and self.commands[k].id == v}
        if keep != consumed:
            self.st.consumed_commands = keep or None

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
        self.record(f"command: {cmd.name} by {cmd.by or 'unknown'}", message, actor=cmd.actor, checks=False)

    def rejected(self, cmd: Command, why: str) -> None:
        self._consume(cmd, "Rejected", why)
        self.event("CommandRejected", f"{self._said(cmd)} rejected: {why}", "Warning")
        self.record(f"rejected: {cmd.name} by {cmd.by or 'unknown'}", why, actor=cmd.actor, checks=False)

    def handle_commands(self, initializing: bool) -> bool:
        """Decide the command annotations not decided yet; True when one was applied (the
        tick ends there and the next one sees the new state)."""
        st = self.st
        self.prune_commands()
        if st.paused is not None and "pause" not in self.commands and self.fresh("resume") is None:
            self.resume(None)  # the pause annotation was removed
            return True
        for name in COMMAND_NAMES:
            cmd = self.fresh(name)
            if cmd is None:
                continue
            phase = _phase(st.phase) or Phase.BLANK
            if initializing:
                if name == "pause":
                    self.cmd_pause(cmd, phase)
                elif name == "resume":
                    self.cmd_resume(cmd, phase)
                elif name == "retry" and phase is Phase.FAILED:
                    self.applied(cmd, f"initializing {self.target} again")
                    self.retry_initialization()
                    return True
                else:
                    self.rejected(cmd, f"{self.target} is not initialized yet")
                continue
            if name == "promote" and phase in _ANALYSING and st.paused is None:
                continue  # analysing() promotes once the canary is ready
            handler = getattr(self, "cmd_" + name.replace("-", "_"))
            if handler(cmd, phase):
                if any(self.fresh(other) is not None for other in COMMAND_NAMES if other != name):
                    self.wake_in(0)  # decide the others against the new state right away
                return True
        return False

    def _no_run(self, phase: Phase, verb: str) -> str:
        if phase in (Phase.PROMOTING, Phase.FINALISING):
            return f"the promotion has already started ({phase.value}); there is nothing to {verb}"
        return f"no analysis is running ({phase.value or 'new'}); there is nothing to {verb}"

    def cmd_abort(self, cmd: Command, phase: Phase) -> bool:
        if phase not in (Phase.WAITING, *_ANALYSING):
            self.rejected(cmd, self._no_run(phase, "abort"))
            return False
        reason = cmd.reason or "no reason given"
        detail = f"aborted by {cmd.who}: {reason}"
        if phase is Phase.WAITING:
            self.sync_revision()
        self.st.last_failure = LastFailure(time=self.now, check=ABORT_CHECK, value=None, message=detail)
        self.rollback(detail, detail, f"Rolling back {self.target}: {detail}")
        self.applied(cmd, f"rolled back: {reason}")
        return True

    def cmd_retry(self, cmd: Command, phase: Phase) -> bool:
        st, obs = self.st, self.obs
        if phase is not Phase.FAILED:
            self.rejected(cmd, f"retry applies to a Failed canary; {self.target} is {phase.value or 'new'}")
            return False
        if st.paused is not None:
            self.rejected(cmd, "the canary is paused; resume it first")
            return False
        if obs.revision == st.last_promoted_spec:
            self.rejected(cmd, f"{self.target} runs the promoted revision {obs.revision}; there is nothing to retry")
            return False
        self.applied(cmd, f"running revision {obs.revision} again")
        self.confirm_rollout()
        return True

    def cmd_promote(self, cmd: Command, phase: Phase) -> bool:
        if self.st.paused is not None:
            self.rejected(cmd, "the canary is paused; resume it first")
            return False
        if phase is Phase.WAITING:
            # the confirm-rollout gate is bypassed; the annotation stays until the promotion
            self.start_run(f"promote requested by {cmd.who}: confirm-rollout skipped", actor=cmd.actor)
            return True
        self.rejected(cmd, self._no_run(phase, "promote"))
        return False

    def cmd_set_weight(self, cmd: Command, phase: Phase) -> bool:
        st = self.st
        weight, max_weight = cmd.weight, self.analysis.max_weight_value
        if cmd.error or weight is None:
            why = cmd.error or "no weight given"
        elif phase not in _ANALYSING:
            why = f"the weight can only be set during the analysis; {self.target} is {phase.value or 'new'}"
        elif self.analysis.strategy != "canary":
            why = f"{self.analysis.strategy} routes all or nothing; set-weight needs the canary strategy"
        elif not 0 <= weight <= max_weight:
            why = f"weight {weight} is outside [0, {max_weight}] (maxWeight)"
        elif not self.canary_readiness().ready:
            why = f"the canary is not ready: {self.canary_readiness().message}"
        elif st.last_step_time is None:
            why = "the analysis has not made its first step yet"
        else:
            why = ""
        if why:
            self.rejected(cmd, why)
            return False
        old = st.canary_weight
        self.route(100 - weight, weight)
        st.last_step_time = self.now  # the analysis continues from here one interval later
        if phase is Phase.WAITING_PROMOTION and weight < max_weight:
            self.set_phase(Phase.PROGRESSING)
        self.event("AdvanceWeight", f"Set {self.target} canary weight {weight}")
        self.applied(cmd, f"canary weight {old} -> {weight}")
        self.wake_in(self.interval)
        return True

    def cmd_pause(self, cmd: Command, phase: Phase) -> bool:
        st = self.st
        since = st.paused.since if st.paused is not None else self.now
        st.paused = PauseState(since=since, by=cmd.by or None, reason=cmd.reason or None)
        self.applied(cmd, f"holding at weight {st.canary_weight} ({phase.value or 'new'}) until resumed")
        self.wake_in(self.interval)
        return True

    def cmd_resume(self, cmd: Command, phase: Phase) -> bool:
        if self.st.paused is None:
            self.rejected(cmd, "the canary is not paused")
            return False
        self.resume(cmd)
        return True

    def resume(self, cmd: Command | None) -> None:
        st = self.st
        assert st.paused is not None
        held = self.now - st.paused.since
        if held.total_seconds() > 0:
            # the paused time does not count toward the progress deadline or the interval
            if st.waiting_since is not None:
                st.waiting_since = st.waiting_since + held
            if st.last_step_time is not None:
                st.last_step_time = st.last_step_time + held
        st.paused = None
        text = f"resumed after {held.total_seconds():.0f}s at weight {st.canary_weight}"
        if cmd is not None:
            self.applied(cmd, text)
        else:
            self.event("CommandApplied", f"resume: the canary.dev/pause annotation was removed; {text}")
            self.record("command: resume", f"pause annotation removed; {text}", actor="user", checks=False)
        self.wake_in(0)

    def hold(self, phase: Phase) -> bool:
        """While paused only a rollback webhook acts; True when the tick is held."""
        if self.st.paused is None:
            return False
        if phase in (Phase.WAITING, *_ANALYSING):
            hook = self.rollback_requested()
            if hook is not None:
                if phase is Phase.WAITING:
                    self.sync_revision()
                self.rollback_manual(hook)
                return True
        self.wake_in(self.interval)
        return True

    def reject_pending_promote(self, why: str) -> None:
        cmd = self.fresh("promote")
        if cmd is not None:
            self.rejected(cmd, why)

    # -- the tick --------------------------------------------------------------------------

    def run(self) -> None:
        st, obs = self.st, self.obs
        if self.spec.suspend:
            self.wake_in(self.interval)
            return
        phase = _phase(st.phase)
        if phase is None or phase in (Phase.TERMINATING, Phase.TERMINATED):
            self.wake_in(self.interval)
            return
        if obs.routes is not None:
            st.canary_weight = obs.routes.canary

        if obs.error:
            self.stall("ObservationError", obs.error)
            return
        if obs.routes is None:
            st.canary_weight = 0  # no routing object: nothing is routed to the canary
        if obs.target is None:
            self.stall("TargetMissing", f"{self.kind} {self.target} not found")
            return

        if not obs.revision:
            self.stall("RevisionUnknown", f"the revision of {self.kind} {self.target} is unknown")
            return

        never_initialized = phase in _STEADY and not st.last_promoted_spec
        if phase in (Phase.BLANK, Phase.INITIALIZING) or never_initialized:
            self.clear_stall()
            if self.handle_commands(initializing=True):
                return
            # A failed initialization is retried when the target changes; a steady status
            # without lastPromotedSpec (lost or foreign status) is initialized again.
            if phase is Phase.FAILED:
                if self.revision_changed():
                    self.retry_initialization()
                else:
                    self.wake_in(self.interval)
                return
            self.initializing()
            return
        if obs.routes is None:
            # Initialize only creates what is missing (an existing primary is left alone), so
            # recreating the routing objects is safe in every phase.
            self.actions.append(Initialize())
            self.stall("RoutesMissing", f"the routing objects of {self.target} are missing; recreating them")
            return
        if obs.primary is None:
            # A missing primary would be created from the target: only safe while the target
            # runs the promoted revision.
            if obs.revision == st.last_promoted_spec:
                self.actions.append(Initialize())
                self.stall("PrimaryMissing", f"{self.primary} not found; recreating it from the promoted revision")
            else:
                self.stall(
                    "PrimaryMissing",
                    f"{self.primary} not found; it is not recreated from an unpromoted revision",
                )
            return
        self.clear_stall()
        if self.handle_commands(initializing=False):
            return
        if self.hold(phase):
            return

        if phase in _STEADY:
            self.steady()
        elif phase is Phase.WAITING:
            self.waiting()
        elif phase in _ANALYSING:
            self.analysing(phase)
        elif phase is Phase.PROMOTING:
            self.promoting()
        elif phase is Phase.FINALISING:
            self.finalising()

    # -- initialization ----------------------------------------------------------------------

    def initializing(self) -> None:
        st, obs = self.st, self.obs
        if st.phase != Phase.INITIALIZING:
            self.set_phase(Phase.INITIALIZING)
            st.waiting_since = self.now  # the primary is created now: no "not ready" event
        self.actions.append(Initialize())
        readiness = self.primary_readiness()
        if not readiness.ready:
            self.wait_for("Primary", self.primary, readiness, self.fail_initialization)
            return
        self.route(100, 0)
        self.scale(up=False)
        self.sync_revision()
        st.last_promoted_spec = obs.revision
        self.reset_run()
        self.set_phase(Phase.INITIALIZED)
        self.record("initialize", f"primary {self.primary} ready; revision {obs.revision} promoted", checks=False)
        self.event("Initialized", f"Initialization done! {self.target}")
        self.alert("info", f"New {self.kind} detected, initialization completed.")
        self.wake_in(self.interval)

    def retry_initialization(self) -> None:
        """The initialization failed and the target changed: copy it into the primary and
        initialize again. The primary's readiness is judged from the next observation."""
        self.set_phase(Phase.INITIALIZING)
        self.actions.append(Initialize())
        self.actions.append(Promote(revision=self.obs.revision))
        self.sync_revision()
        self.st.waiting_since = self.now
        self.record("initialize", f"initializing again with revision {self.obs.revision}", checks=False)
        self.event("Initializing", f"New revision detected! Initializing {self.target} again")
        self.wake_in(min(self.interval, self.spec.progress_deadline))

    def fail_initialization(self, detail: str) -> None:
        st = self.st
        if self.routes is not None:
            self.route(0, 100)
        self.sync_revision()
        st.waiting_since = None
        st.last_failure = LastFailure(time=self.now, check=PRIMARY_READINESS_CHECK, value=None, message=detail)
        self.set_phase(
            Phase.FAILED,
            f"Initialization failed, primary not ready: {detail}. Traffic stays on {self.target}.",
        )
        self.record("fail", f"initialization failed, primary not ready: {detail}", checks=False)
        self.event("InitializationFailed", f"Initialization of {self.target} failed, primary not ready: {detail}", "Warning")
        self.alert("error", f"Initialization of {self.target} failed, primary not ready: {detail}")

    # -- readiness -------------------------------------------------------------------------

    def primary_readiness(self) -> Readiness:
        if self.obs.primary is None:
            return Readiness(Ready.WAITING, f"{self.primary} does not exist yet")
        return self.obs.primary.readiness

    def canary_readiness(self) -> Readiness:
        target = self.obs.target
        assert target is not None
        if target.readiness.ready and target.replicas == 0:
            return Readiness(Ready.WAITING, f"{self.target} is scaled to zero")
        return target.readiness

    def wait_for(self, role: str, name: str, readiness: Readiness, give_up) -> None:
        """Wait for a workload; give up on a hard failure or after the progress deadline."""
        st = self.st
        if readiness.state is Ready.FAILED:
            give_up(f"{name} failed: {readiness.message}")
            return
        if st.waiting_since is None:
            st.waiting_since = self.now
            self.event(f"{role}NotReady", f"{role} {name} not ready: {readiness.message}")
        waited = (self.now - st.waiting_since).total_seconds()
        deadline = self.spec.progress_deadline
        if waited >= deadline:
            give_up(
                f"{name} not ready after {waited:.0f}s (progressDeadlineSeconds {deadline}): "
                f"{readiness.message}"
            )
            return
        self.wake_in(min(self.interval, deadline - waited))

    # -- steady phases and new revisions ------------------------------------------------------

    def steady(self) -> None:
        st, obs = self.st, self.obs
        self.wake_in(self.interval)
        if obs.revision == st.last_promoted_spec:
            if self.revision_changed():
                self.sync_revision()  # back to the promoted spec: nothing to analyse
            return
        if not self.revision_changed():
            return
        self.confirm_rollout()

    def confirm_rollout(self) -> None:
        st = self.st
        failed, muted = self.gate("confirm-rollout")
        if failed is not None:
            if st.phase != Phase.WAITING:
                self.set_phase(Phase.WAITING)
                if not muted:
                    self.alert("warn", "Canary is waiting for approval.")
            self.event("WaitingApproval", f"Halt {self.target} advancement waiting for approval {failed.name}")
            self.record("wait-gate", _webhook_detail(failed), actor=f"webhook:{failed.name}")
            self.take_step()
            return
        self.start_run()

    def start_run(self, message: str = "", actor: str = "operator") -> None:
        self.record("start", message or f"new revision {self.obs.revision}", actor=actor)
        self.event("NewRevision", f"New revision detected! Scaling up {self.target}")
        self.alert("info", "New revision detected, progressing canary analysis.")
        clean = self.routes is not None and (self.routes.canary, self.routes.mirrored) == (0, False)
        if not clean and self.primary_readiness().ready:
            self.route(100, 0)
        self.scale(up=True)
        self.sync_revision()
        self.reset_run()
        self.st.waiting_since = self.now  # the progress deadline counts from the scale-up
        self.set_phase(Phase.PROGRESSING)
        self.wake_in(min(self.interval, self.spec.progress_deadline))

    def waiting(self) -> None:
        st, obs = self.st, self.obs
        if obs.revision and obs.revision == st.last_promoted_spec:
            self.cancel_run(scaled_up=False)
            return
        hook = self.rollback_requested()
        if hook is not None:
            self.sync_revision()
            self.rollback_manual(hook)
            return
        if not self.due():
            return
        self.confirm_rollout()

    def cancel_run(self, scaled_up: bool) -> None:
        """The target went back to the promoted revision: nothing is left to analyse."""
        if self.routes is None or (self.routes.canary, self.routes.mirrored) != (0, False):
            self.route(100, 0)
        if scaled_up:
            self.scale(up=False)
        self.sync_revision()
        self.reset_run()
        self.set_phase(Phase.SUCCEEDED)
        self.reject_pending_promote("the target went back to the promoted revision")
        self.record("cancel", f"{self.target} is back at the promoted revision {self.obs.revision}", checks=False)
        self.event(
            "RevisionReverted",
            f"{self.target} is back at the promoted revision; analysis cancelled",
        )
        self.wake_in(self.interval)

    # -- analysis --------------------------------------------------------------------------

    def analysing(self, phase: Phase) -> None:
        st, obs = self.st, self.obs
        if self.revision_changed():
            if obs.revision == st.last_promoted_spec:
                self.cancel_run(scaled_up=True)
            else:
                self.restart()
            return
        hook = self.rollback_requested()
        if hook is not None:
            self.rollback_manual(hook)
            return
        if st.failed_checks >= self.threshold:
            self.rollback_threshold()
            return
        readiness = self.canary_readiness()
        if not readiness.ready:
            self.wait_for("Canary", self.target, readiness, self.rollback_deadline)
            return
        st.waiting_since = None
        cmd = self.fresh("promote")
        if cmd is not None:
            self.applied(cmd, "remaining analysis skipped; promoting")
            self.promote(record=False)
            return
        if self.spec.analysis_skipped:
            self.skip_analysis()
            return
        if not self.due():
            return
        self.take_step()
        self.analysis_step(phase)

    def restart(self) -> None:
        self.reject_pending_promote(f"a new revision {self.obs.revision} was detected; promote again for it")
        self.record("restart", f"new revision {self.obs.revision} during the analysis", checks=False)
        self.event("RestartAnalysis", f"New revision detected! Restarting analysis for {self.target}")
        self.route(100, 0)
        self.sync_revision()
        self.reset_run()
        self.st.waiting_since = self.now  # the target rolls out the new revision
        self.set_phase(Phase.PROGRESSING)
        self.wake_in(min(self.interval, self.spec.progress_deadline))

    def analysis_step(self, phase: Phase) -> None:
        st = self.st
        mirrored = bool(self.routes and self.routes.mirrored)
        first = st.canary_weight == 0 and st.iterations == 0 and not (self.analysis.mirror and mirrored)
        if first:
            self.event("StartAnalysis", f"Starting canary analysis for {self.target}")
            failed, _ = self.gate("pre-rollout")
            if failed is not None:
                self.count_failure(failed.name, None, _webhook_detail(failed))
                return
        else:
            failed, _ = self.gate("rollout")
            if failed is not None:
                self.count_failure(failed.name, None, _webhook_detail(failed))
                return
            metric = self.failed_metric()
            if metric is not None:
                self.count_failure(metric.name, metric.value, metric_failure_detail(metric))
                return
        strategy = self.analysis.strategy
        if strategy == "ab":
            self.advance_ab()
        elif strategy == "bluegreen":
            self.advance_bluegreen()
        else:
            self.advance_canary(phase)

    def count_failure(self, check: str, value: float | None, detail: str) -> None:
        st = self.st
        st.failed_checks += 1
        st.last_failure = LastFailure(time=self.now, check=check, value=value, message=detail)
        self.event("Halt", f"Halt {self.target} advancement: {detail}", "Warning")
        if st.failed_checks >= self.threshold:
            self.rollback_threshold()
        else:
            self.record("halt", f"{detail} (failed checks {st.failed_checks}/{self.threshold})")

    def advance_canary(self, phase: Phase) -> None:
        weight = self.st.canary_weight
        max_weight = self.analysis.max_weight_value
        if weight >= max_weight:
            if self.confirm_promotion():
                self.promote()
            return
        mirrored = bool(self.routes and self.routes.mirrored)
        if not mirrored and phase is not Phase.WAITING_PROMOTION:
            failed, muted = self.gate("confirm-traffic-increase")
            if failed is not None:
                self.event(
                    "WaitingApproval",
                    f"Halt {self.target} advancement waiting for traffic increase approval {failed.name}",
                )
                self.record(
                    "wait-gate", _webhook_detail(failed), actor=f"webhook:{failed.name}"
                )
                if not muted:
                    self.alert("warn", "Canary traffic increase is waiting for approval.")
                return
        if self.analysis.mirror and weight == 0 and not mirrored:
            self.route(100, 0, mirror=True)
            self.event("AdvanceWeight", f"Advance {self.target} canary weight 0 (mirroring traffic)")
            self.record("advance 0", "mirroring traffic to the canary")
            return
        new = next_weight(self.analysis, weight)
        self.route(100 - new, new)
        self.event("AdvanceWeight", f"Advance {self.target} canary weight {new}")
        self.record(f"advance {new}", f"canary weight {weight} -> {new}")

    def advance_ab(self) -> None:
        st = self.st
        total = self.analysis.iterations or 0
        if st.iterations < total:
            if self.routes is None or (self.routes.primary, self.routes.canary) != (0, 100):
                self.route(0, 100)
            st.iterations += 1
            self.event("AdvanceIteration", f"Advance {self.target} canary iteration {st.iterations}/{total}")
            self.record(f"advance iteration {st.iterations}/{total}")
            return
        if self.confirm_promotion():
            self.promote()

    def advance_bluegreen(self) -> None:
        st = self.st
        total = self.analysis.iterations or 0
        if st.iterations < total:
            if self.analysis.mirror and not (self.routes and self.routes.mirrored):
                self.route(100, 0, mirror=True)
            st.iterations += 1
            self.event("AdvanceIteration", f"Advance {self.target} canary iteration {st.iterations}/{total}")
            self.record(f"advance iteration {st.iterations}/{total}")
            return
        if st.iterations == total:
            if not self.confirm_promotion():
                return
            self.route(0, 100)
            st.iterations += 1
            self.event("RouteToCanary", f"Routing all traffic to canary {self.target}")
            self.record("advance 100", "all traffic routed to the canary before the promotion")
            return
        self.promote()

    def confirm_promotion(self) -> bool:
        failed, muted = self.gate("confirm-promotion")
        if failed is None:
            return True
        if self.st.phase != Phase.WAITING_PROMOTION:
            self.set_phase(Phase.WAITING_PROMOTION)
            if not muted:
                self.alert("warn", "Canary promotion is waiting for approval.")
        self.event(
            "WaitingApproval",
            f"Halt {self.target} advancement waiting for promotion approval {failed.name}",
        )
        self.record("wait-gate", _webhook_detail(failed), actor=f"webhook:{failed.name}")
        return False

    # -- promotion -------------------------------------------------------------------------

    def promote(self, record: bool = True) -> None:
        if record:
            self.record("promote", "analysis completed; copying the canary template to the primary")
        self.actions.append(Promote(revision=self.st.last_applied_spec or self.obs.revision))
        self.event("Promote", f"Copying {self.target} template spec to {self.primary}")
        self.st.waiting_since = self.now  # the primary rolls out the promoted revision
        self.set_phase(Phase.PROMOTING)

    def skip_analysis(self) -> None:
        st = self.st
        self.actions.append(Promote(revision=st.last_applied_spec or self.obs.revision))
        self.route(100, 0)
        self.scale(up=False)
        st.last_promoted_spec = st.last_applied_spec
        st.iterations = 0
        st.waiting_since = None
        self.set_phase(Phase.SUCCEEDED)
        self.record("promote", "analysis skipped (skipAnalysis); promotion finished", checks=False)
        self.event("PromotionCompleted", f"Analysis skipped, promotion of {self.target} finished! Scaling down {self.target}")
        self.alert("info", "Canary analysis was skipped, promotion finished.")
        self.post_rollout(Phase.SUCCEEDED)
        self.wake_in(self.interval)

    def promoting(self) -> None:
        st = self.st
        readiness = self.primary_readiness()
        if not readiness.ready:
            self.wait_for("Primary", self.primary, readiness, self.fail_promotion)
            return
        st.waiting_since = None
        step = self.analysis.step_weight_promotion or 0
        # All at once (no stepWeightPromotion): the primary runs the promoted revision and is
        # ready, so traffic goes back now rather than an interval later (Flagger waits a tick).
        if step > 0 and not self.due():
            return
        self.take_step()
        weight = self.st.canary_weight
        if step > 0 and weight > 0 and self.analysis.strategy != "ab":
            new = max(0, weight - step)
            self.route(100 - new, new)
            self.event("AdvancePrimaryWeight", f"Advance {self.target} primary weight {100 - new}")
            self.record(f"promote-step {new}", f"primary weight {100 - new}", checks=False)
        else:
            self.route(100, 0)
            self.event("RouteToPrimary", f"Routing all traffic to primary {self.primary}")
            self.record("promote-step 0", "all traffic routed to the primary", checks=False)
        if st.canary_weight == 0:
            self.set_phase(Phase.FINALISING)
            self.wake_in(0)

    def finalising(self) -> None:
        st = self.st
        readiness = self.primary_readiness()
        if not readiness.ready:
            self.wait_for("Primary", self.primary, readiness, self.fail_promotion)
            return
        if self.routes is None or (self.routes.canary, self.routes.mirrored) != (0, False):
            self.route(100, 0)
        self.scale(up=False)
        st.last_promoted_spec = st.last_applied_spec
        st.iterations = 0
        st.waiting_since = None
        self.set_phase(Phase.SUCCEEDED, self.success_message())
        self.record("complete", f"promotion of revision {st.last_promoted_spec} finished", checks=False)
        self.event("PromotionCompleted", f"Promotion completed! Scaling down {self.target}")
        self.alert("info", "Canary analysis completed successfully, promotion finished.")
        self.post_rollout(Phase.SUCCEEDED)
        self.wake_in(self.interval)

    def success_message(self) -> str:
        """The Promoted condition: who or which checks decided the promotion of this run."""
        base = "Canary analysis completed successfully, promotion finished."
        for entry in reversed(self.st.ledger or []):
            if entry.action in ("start", "restart"):
                break
            if entry.action.startswith("command: promote"):
                who = entry.actor.split(":", 1)[1] if ":" in entry.actor else "an unnamed user"
                reason = self.st.last_command.reason if self.st.last_command and self.st.last_command.reason else ""
                because = f" ({reason})" if reason else ""
                return f"Canary promoted by {who}{because} before the analysis completed, promotion finished."
            if entry.action == "promote":
                checks = [c for c in entry.checks or [] if c.value is not None]
                if not checks:
                    return base
                values = ", ".join(f"{c.name} {_num(c.value)}" for c in checks)
                return f"{base[:-1]}; last checks: {values}."
        return base

    def fail_promotion(self, detail: str) -> None:
        """Flagger 1.44 (handleFailedPromotion): keep serving from the canary, 0/100."""
        st = self.st
        self.route(0, 100)
        st.waiting_since = None
        st.last_failure = LastFailure(time=self.now, check=PRIMARY_READINESS_CHECK, value=None, message=detail)
        self.set_phase(
            Phase.FAILED,
            f"Promotion failed, primary not ready: {detail}. Traffic stays on the canary {self.target}.",
        )
        self.record("fail", f"promotion failed, primary not ready: {detail}", checks=False)
        self.event("PromotionFailed", f"Promotion of {self.target} failed, primary not ready: {detail}", "Warning")
        self.alert("error", f"Promotion failed, primary not ready: {detail}")
        self.post_rollout(Phase.FAILED)
        self.wake_in(self.interval)

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, why: str, condition_detail: str, alert_message: str) -> None:
        st = self.st
        self.route(100, 0)
        self.scale(up=False)
        st.waiting_since = None
        self.set_phase(
            Phase.FAILED,
            f"Canary analysis failed, {self.kind} scaled to zero: {condition_detail}.",
        )
        self.event("Rollback", f"Rolling back {self.target} {why}. Canary failed! Scaling down {self.target}", "Warning")
        self.alert("error", alert_message)
        self.post_rollout(Phase.FAILED)
        self.wake_in(self.interval)

    def rollback_threshold(self) -> None:
        st = self.st
        if st.last_failure is None:
            st.last_failure = LastFailure(
                time=self.now,
                check="failed-checks",
                value=float(st.failed_checks),
                message=f"failedChecks set to {st.failed_checks}",
            )
        detail = st.last_failure.message
        count = f"{st.failed_checks}/{self.threshold}"
        self.record("rollback", f"failed checks threshold reached ({count}): {detail}")
        self.rollback(
            f"failed checks threshold reached {st.failed_checks}: {detail}",
            f"failed checks threshold reached ({count}), last failure: {detail}",
            f"Failed checks threshold reached {st.failed_checks}: {detail}",
        )

    def rollback_manual(self, hook: WebhookResult) -> None:
        detail = f"rollback webhook {hook.name} invoked"
        self.st.last_failure = LastFailure(time=self.now, check=hook.name, value=None, message=detail)
        self.record("rollback", detail, actor=f"webhook:{hook.name}")
        self.rollback(
            f"manual webhook {hook.name} invoked",
            detail,
            f"Rolling back {self.target}: manual webhook {hook.name} invoked",
        )

    def rollback_deadline(self, detail: str) -> None:
        self.st.last_failure = LastFailure(
            time=self.now, check=PROGRESS_DEADLINE_CHECK, value=None, message=detail
        )
        self.record("rollback", f"progress deadline exceeded: {detail}", checks=False)
        self.rollback(
            f"progress deadline exceeded: {detail}",
            f"progress deadline exceeded: {detail}",
            f"Progress deadline exceeded for {self.target}: {detail}",
        )


# ---- entry points ------------------------------------------------------------------------


def plan(canary: Canary, status: CanaryStatus | None, obs: Observation) -> CheckPlan:
    """The checks step() will need for this tick (webhook types in call order, metrics)."""
    tick = _Tick(canary, status, obs, planning=True)
    tick.run()
    return CheckPlan(webhooks=tuple(tick.needed_hooks), metrics=tick.needs_metrics)


def step(canary: Canary, status: CanaryStatus | None, obs: Observation) -> Decision:
    """Decide one tick: the next status, the actions in order and when to be called again."""
    tick = _Tick(canary, status, obs, planning=False)
    try:
        tick.run()
    except _MissingChecks:
        # The operator did not run a check plan() asked for: decide nothing this tick.
        unchanged = status.model_copy(deep=True) if status is not None else CanaryStatus()
        return Decision(status=unchanged, actions=[], wake_after=RETRY_AFTER_MISSING_CHECKS,
                        clear=_to_clear(unchanged, obs))
    wake = tick.wake if tick.wake is not None else tick.interval
    entries = tick.ledger_entries()
    if entries:
        ledger.append(tick.st, entries)
    return Decision(status=tick.st, actions=tick.actions, wake_after=wake, clear=_to_clear(tick.st, obs))


def _to_clear(status: CanaryStatus, obs: Observation) -> tuple[str, ...]:
    """Annotations of decided commands; pause stays while it holds the canary."""
    consumed = status.consumed_commands or {}
    return tuple(
        cmd.annotation
        for cmd in obs.commands
        if consumed.get(cmd.name) == cmd.id and not (cmd.name == "pause" and status.paused is not None)
    )
