"""The entry points ``plan`` and ``step``, the guards every tick passes first and the
phase -> handler table."""

from __future__ import annotations

from typing import Callable

from canary import ledger
from canary.engine.commands import Commands
from canary.engine.tick import (
    ANALYSING,
    RETRY_AFTER_MISSING_CHECKS,
    STALLED_CHECK,
    STEADY,
    Decision,
    MissingChecks,
    phase_of,
)
from canary.models import Canary, CanaryStatus, LastFailure
from canary.types import CheckPlan, Initialize, Observation, Phase


class _Tick(Commands):
    def run(self) -> None:
        st, obs = self.st, self.obs
        if self.suspended():
            return
        phase = phase_of(st.phase)
        if phase is None or phase in (Phase.TERMINATING, Phase.TERMINATED):
            self.wake_in(self.interval)
            return
        if obs.routes is not None:
            st.canary_weight = obs.routes.canary
        # the last written decision first: whatever of it the cluster does not show is done now,
        # and nothing new is decided on top of it (no analysis step of a canary whose route did
        # not land: its checks would judge traffic it never got), but for a person's command
        self.converge()
        if self.actions and not any(self.fresh(name) for name in self.commands):
            self.wake_in(min(self.interval, 1.0))
            return

        # analysis.advisory: the rest of the tick decides on the virtual weight (engine.advisory)
        self.begin_advisory(phase)
        if obs.error:
            self.stalled(phase, "ObservationError", obs.error)
            return
        if obs.routes is None:
            st.canary_weight = 0  # no routing object: nothing is routed to the canary
        if obs.target is None:
            self.stalled(phase, "TargetMissing", f"{self.kind} {self.target} not found", can_serve=False)
            return

        if not obs.revision:
            self.stalled(phase, "RevisionUnknown", f"the revision of {self.kind} {self.target} is unknown")
            return

        never_initialized = phase in STEADY and not st.last_promoted_spec
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
            self.stalled(phase, "RoutesMissing", f"the routing objects of {self.target} are missing; recreating them")
            return
        if obs.primary is None:
            # A missing primary would be created from the target: only safe while the target
            # runs the promoted revision.
            if obs.revision == st.last_promoted_spec:
                self.actions.append(Initialize())
                self.stalled(phase, "PrimaryMissing", f"{self.primary} not found; recreating it from the promoted revision")
            else:
                self.stalled(
                    phase,
                    "PrimaryMissing",
                    f"{self.primary} not found; it is not recreated from an unpromoted revision",
                )
            return
        self.clear_stall()
        if self.handle_commands(initializing=False):
            return
        if self.hold(phase):
            return
        handler = _PHASES.get(phase)
        if handler is not None:
            handler(self, phase)

    def suspended(self) -> bool:
        """spec.suspend holds everything; the held time does not count toward the progress
        deadline or the analysis interval (as a pause)."""
        st = self.st
        if self.spec.suspend:
            if st.suspended_since is None:
                st.suspended_since = self.now
            self.wake_in(self.interval)
            return True
        if st.suspended_since is not None:
            held = self.now - st.suspended_since
            if held.total_seconds() > 0:
                if st.waiting_since is not None:
                    st.waiting_since = st.waiting_since + held
                if st.last_step_time is not None:
                    st.last_step_time = st.last_step_time + held
            st.suspended_since = None
        return False

    def stalled(self, phase: Phase, reason: str, message: str, *, can_serve: bool = True) -> None:
        """The engine cannot go on as usual. In a run (Waiting, Progressing, WaitingPromotion) an
        abort and the rollback webhooks are still honoured and the progress deadline still ends
        it; a canary that cannot serve (its target is gone) is rolled back at once. A run that
        cannot go on ends with all traffic on the primary."""
        self.stall(reason, message)
        if phase not in (Phase.WAITING, *ANALYSING):
            return
        st = self.st
        self.prune_commands()
        cmd = self.fresh("abort")
        if cmd is not None:
            self.apply_abort(cmd, phase)
            return
        hook = self.rollback_requested()
        if hook is not None:
            self.rollback_manual(hook)
            return
        if phase is Phase.WAITING:
            if self.obs.revision and self.obs.revision == st.last_promoted_spec:
                self.cancel_run(scaled_up=False)  # back at the promoted revision: nothing to wait for
            return  # nothing is routed to the canary yet: wait for the input to be fixed
        if not can_serve:
            self.st.last_failure = LastFailure(time=self.now, check=STALLED_CHECK, value=None, message=message)
            self.record("rollback", f"{message}: the canary cannot serve", checks=False)
            self.rollback(message, message, f"Rolling back {self.target}: {message}")
            return
        if st.waiting_since is None:
            st.waiting_since = self.now
        waited = (self.now - st.waiting_since).total_seconds()
        deadline = self.spec.progress_deadline
        if waited >= deadline:
            self.rollback_deadline(f"{message} for {waited:.0f}s (progressDeadlineSeconds {deadline})")
            return
        self.wake_in(min(self.interval, deadline - waited))


_PHASES: dict[Phase, Callable[[_Tick, Phase], None]] = {
    **{p: lambda t, _: t.steady() for p in STEADY},
    Phase.WAITING: lambda t, _: t.waiting(),
    **{p: _Tick.analysing for p in ANALYSING},
    Phase.PROMOTING: lambda t, _: t.promoting(),
    Phase.FINALISING: lambda t, _: t.finalising(),
}


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
    except MissingChecks:
        # The operator did not run a check plan() asked for: decide nothing this tick.
        unchanged = status.model_copy(deep=True) if status is not None else CanaryStatus()
        return Decision(status=unchanged, actions=[], wake_after=RETRY_AFTER_MISSING_CHECKS,
                        clear=_to_clear(unchanged, obs))
    tick.finish()
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
