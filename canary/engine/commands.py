"""Commands (the ``canary.dev/<name>`` annotations, see docs/cli.md): one rule table that
says when a command is refused, shared with the CLI's precheck, and the handlers that apply
them.

Commands are decided in a fixed order (abort, retry, resume, pause, set-weight, promote), at
most one applied per tick; the others are decided on the next tick (at once) against the new
state. A decided command (applied or refused) records its id in ``status.consumedCommands``
and ``status.lastCommand``, emits an event and adds a ledger entry; ``Decision.clear`` lists
the annotations to remove after the status is written. ``pause`` stays until removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from canary.engine.lifecycle import Lifecycle
from canary.engine.strategies import STRATEGIES
from canary.engine.tick import ABORT_CHECK, ANALYSING, STEADY, phase_of
from canary.models import CanaryStatus, LastFailure, PauseState
from canary.types import COMMAND_NAMES, Command, Phase


@dataclass(frozen=True)
class Facts:
    """What the rules look at. A field left None is unknown (the CLI does not see the
    workloads) and its rule is skipped."""

    target: str
    paused: bool = False
    initializing: bool = False
    revision: str | None = None
    promoted_revision: str | None = None
    strategy: str = "canary"
    max_weight: int = 100
    weight: int | None = None
    weight_error: str = ""
    canary_not_ready: str | None = None
    stepped: bool | None = None


def _no_run(phase: Phase, verb: str) -> str:
    if phase in (Phase.PROMOTING, Phase.FINALISING):
        return f"the promotion has already started ({phase.value}); there is nothing to {verb}"
    return f"no analysis is running ({phase.value or 'new'}); there is nothing to {verb}"


def _abort(phase: Phase, f: Facts) -> str | None:
    return None if phase in (Phase.WAITING, *ANALYSING) else _no_run(phase, "abort")


def _retry(phase: Phase, f: Facts) -> str | None:
    if phase is not Phase.FAILED:
        return f"retry applies to a Failed canary; {f.target} is {phase.value or 'new'}"
    if f.paused:
        return "the canary is paused; resume it first"
    if f.revision is not None and f.revision == f.promoted_revision:
        return f"{f.target} runs the promoted revision {f.revision}; there is nothing to retry"
    return None


def _promote(phase: Phase, f: Facts) -> str | None:
    if f.paused:
        return "the canary is paused; resume it first"
    if phase in (Phase.WAITING, *ANALYSING):
        return None
    return _no_run(phase, "promote")


def _set_weight(phase: Phase, f: Facts) -> str | None:
    weight = f.weight
    if f.weight_error or weight is None:
        return f.weight_error or "no weight given"
    if phase not in ANALYSING:
        return f"the weight can only be set during the analysis; {f.target} is {phase.value or 'new'}"
    strategy = STRATEGIES.get(f.strategy, STRATEGIES["canary"])
    if not strategy.set_weight:
        return f"{f.strategy} routes all or nothing; set-weight needs the canary strategy"
    if not 0 <= weight <= f.max_weight:
        return f"weight {weight} is outside [0, {f.max_weight}] (maxWeight)"
    if f.canary_not_ready is not None:
        return f"the canary is not ready: {f.canary_not_ready}"
    if f.stepped is False:
        return "the analysis has not made its first step yet"
    return None


def _pause(phase: Phase, f: Facts) -> str | None:
    return None  # a pause while paused keeps the first pause's time


def _resume(phase: Phase, f: Facts) -> str | None:
    return None if f.paused else "the canary is not paused"


RULES: dict[str, Callable[[Phase, Facts], str | None]] = {
    "abort": _abort,
    "retry": _retry,
    "promote": _promote,
    "set-weight": _set_weight,
    "pause": _pause,
    "resume": _resume,
}


def initializing(status: CanaryStatus) -> bool:
    """Commands are decided as for a Canary not initialized yet (see decide.run)."""
    phase = phase_of(status.phase)
    return phase in (Phase.BLANK, Phase.INITIALIZING) or (phase in STEADY and not status.last_promoted_spec)


def refusal(name: str, phase: Phase, facts: Facts) -> str | None:
    """Why the command `name` is refused in `phase`, or None when it applies."""
    if facts.initializing and name not in ("pause", "resume"):
        if name == "retry" and phase is Phase.FAILED:
            return None  # initialize again
        return f"{facts.target} is not initialized yet"
    return RULES[name](phase, facts)


class Commands(Lifecycle):
    def prune_commands(self) -> None:
        """Forget the ids of decided commands whose annotation is gone (or has a new value)."""
        consumed = self.st.consumed_commands or {}
        keep = {k: v for k, v in consumed.items() if k in self.commands and self.commands[k].id == v}
        if keep != consumed:
            self.st.consumed_commands = keep or None

    def facts(self, cmd: Command, initializing: bool) -> Facts:
        st = self.st
        checks_readiness = cmd.name == "set-weight" and not initializing
        readiness = self.canary_readiness() if checks_readiness else None
        return Facts(
            target=self.target,
            paused=st.paused is not None,
            initializing=initializing,
            revision=self.obs.revision,
            promoted_revision=st.last_promoted_spec,
            strategy=self.analysis.strategy,
            max_weight=self.analysis.max_weight_value,
            weight=cmd.weight,
            weight_error=cmd.error,
            canary_not_ready=None if readiness is None or readiness.ready else readiness.message,
            stepped=st.last_step_time is not None,
        )

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
            phase = phase_of(st.phase) or Phase.BLANK
            if not initializing and name == "promote" and phase in ANALYSING and st.paused is None:
                continue  # analysing() promotes once the canary is ready
            why = refusal(name, phase, self.facts(cmd, initializing))
            if why is not None:
                self.rejected(cmd, why)
                continue
            if initializing:
                if name == "retry":
                    self.applied(cmd, f"initializing {self.target} again")
                    self.retry_initialization()
                    return True
                _APPLY[name](self, cmd, phase)  # pause or resume; initialization goes on
                continue
            _APPLY[name](self, cmd, phase)
            if any(self.fresh(other) is not None for other in COMMAND_NAMES if other != name):
                self.wake_in(0)  # decide the others against the new state right away
            return True
        return False

    # -- the handlers (called once refusal() let the command through) ----------------------

    def apply_abort(self, cmd: Command, phase: Phase) -> None:
        reason = cmd.reason or "no reason given"
        detail = f"aborted by {cmd.who}: {reason}"
        if phase is Phase.WAITING:
            self.sync_revision()
        self.st.last_failure = LastFailure(time=self.now, check=ABORT_CHECK, value=None, message=detail)
        self.rollback(detail, detail, f"Rolling back {self.target}: {detail}")
        self.applied(cmd, f"rolled back: {reason}")

    def apply_retry(self, cmd: Command, phase: Phase) -> None:
        self.applied(cmd, f"running revision {self.obs.revision} again")
        self.confirm_rollout()

    def apply_promote(self, cmd: Command, phase: Phase) -> None:
        # Waiting: the confirm-rollout gate is bypassed; the annotation stays until the
        # promotion (analysing() applies it once the canary is ready).
        assert phase is Phase.WAITING
        self.start_run(f"promote requested by {cmd.who}: confirm-rollout skipped", actor=cmd.actor)

    def apply_set_weight(self, cmd: Command, phase: Phase) -> None:
        st = self.st
        weight = cmd.weight
        assert weight is not None
        old = st.canary_weight
        self.route(100 - weight, weight)
        st.last_step_time = self.now  # the analysis continues from here one interval later
        if phase is Phase.WAITING_PROMOTION and weight < self.analysis.max_weight_value:
            self.set_phase(Phase.PROGRESSING)
        self.event("AdvanceWeight", f"Set {self.target} canary weight {weight}")
        self.applied(cmd, f"canary weight {old} -> {weight}")
        self.wake_in(self.interval)

    def apply_pause(self, cmd: Command, phase: Phase) -> None:
        st = self.st
        since = st.paused.since if st.paused is not None else self.now
        st.paused = PauseState(since=since, by=cmd.by or None, reason=cmd.reason or None)
        self.applied(cmd, f"holding at weight {st.canary_weight} ({phase.value or 'new'}) until resumed")
        self.wake_in(self.interval)

    def apply_resume(self, cmd: Command, phase: Phase) -> None:
        self.resume(cmd)

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
            self.record("command", f"pause annotation removed; {text}", actor="user", checks=False,
                        action="command: resume", command="resume")
        self.wake_in(0)

    def hold(self, phase: Phase) -> bool:
        """While paused only a rollback webhook acts; True when the tick is held."""
        if self.st.paused is None:
            return False
        if phase in (Phase.WAITING, *ANALYSING):
            hook = self.rollback_requested()
            if hook is not None:
                if phase is Phase.WAITING:
                    self.sync_revision()
                self.rollback_manual(hook)
                return True
        self.wake_in(self.interval)
        return True


_APPLY: dict[str, Callable[[Commands, Command, Phase], None]] = {
    "abort": Commands.apply_abort,
    "retry": Commands.apply_retry,
    "promote": Commands.apply_promote,
    "set-weight": Commands.apply_set_weight,
    "pause": Commands.apply_pause,
    "resume": Commands.apply_resume,
}
