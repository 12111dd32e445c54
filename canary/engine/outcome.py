"""How a run ends: promotion (Promoting, Finalising, Succeeded) and rollback (Failed)."""

from __future__ import annotations

from canary import ledger
from canary.engine.checks import Checks
from canary.engine.strategies import strategy_of
from canary.engine.tick import (
    PRIMARY_READINESS_CHECK,
    PROGRESS_DEADLINE_CHECK,
    num,
)
from canary.models import LastFailure
from canary.types import Phase, Readiness, Ready, WebhookResult


class Outcomes(Checks):
    # -- promotion -------------------------------------------------------------------------

    def promote(self, record: bool = True) -> None:
        if record:
            self.record("promote", "analysis completed; copying the canary template to the primary")
            self.tally(True, "promoted by the analysis")
        else:
            cmd = self.st.last_command
            self.tally(True, f"promoted by {cmd.by or 'an unnamed user'}" if cmd is not None else "promoted")
        if self.virtual:
            self.st.canary_weight = 0  # a person promotes: nothing to step back from
            if self.routes is not None:
                self.routes = self.real_routes
        self.promote_primary(self.st.last_applied_spec or self.obs.revision)
        self.event("Promote", f"Copying {self.target} template spec to {self.primary}")
        self.st.waiting_since = self.now  # the primary rolls out the promoted revision
        self.set_phase(Phase.PROMOTING)

    def skip_analysis(self) -> None:
        st = self.st
        if self.virtual:
            self.advise("Promote", "the analysis is skipped (skipAnalysis)")
            return
        self.promote_primary(st.last_applied_spec or self.obs.revision)
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

    def restart(self) -> None:
        """A new revision during the run: analyse it from the start (canary.engine.lifecycle)."""
        raise NotImplementedError

    def promoted_primary_readiness(self) -> Readiness | None:
        """The primary's readiness, counting a primary that does not run the promoted revision
        yet as not ready; None when that revision cannot reach it any more (the target moved on
        before the copy was made: the new revision is analysed instead)."""
        st, obs = self.st, self.obs
        if self.primary_short_of(st.last_applied_spec):
            if obs.revision != st.last_applied_spec:
                self.restart()
                return None
            return Readiness(Ready.WAITING, f"{self.primary} does not run revision {st.last_applied_spec} yet")
        return self.primary_readiness()

    def promoted_primary_serves(self) -> bool:
        """The primary runs the promoted revision and is ready; otherwise wait (or give up at the
        deadline, or analyse the new revision that replaced the promoted one)."""
        readiness = self.promoted_primary_readiness()
        if readiness is None:
            return False
        if not readiness.ready:
            self.wait_for("Primary", self.primary, readiness, self.fail_promotion)
            return False
        return True

    def promoting(self) -> None:
        st = self.st
        if not self.promoted_primary_serves():
            return
        st.waiting_since = None
        step = self.analysis.step_weight_promotion or 0
        # All at once (no stepWeightPromotion): the primary runs the promoted revision and is
        # ready, so traffic goes back now rather than an interval later (Flagger waits a tick).
        if step > 0 and not self.due():
            return
        self.take_step()
        weight = self.st.canary_weight
        if step > 0 and weight > 0 and strategy_of(self.analysis).paced_promotion:
            new = max(0, weight - step)
            self.route(100 - new, new)
            self.event("AdvancePrimaryWeight", f"Advance {self.target} primary weight {100 - new}")
            self.record("promote-step", f"primary weight {100 - new}", checks=False, action=f"promote-step {new}")
        else:
            self.route(100, 0)
            self.event("RouteToPrimary", f"Routing all traffic to primary {self.primary}")
            self.record("promote-step", "all traffic routed to the primary", checks=False, action="promote-step 0")
        if st.canary_weight == 0:
            self.set_phase(Phase.FINALISING)
            self.wake_in(0)

    def finalising(self) -> None:
        st = self.st
        if not self.promoted_primary_serves():
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
            kind = ledger.kind_of(entry)
            if kind in ("start", "restart"):
                break
            if kind == "command" and ledger.command_of(entry) == "promote":
                who = entry.actor.split(":", 1)[1] if ":" in entry.actor else "an unnamed user"
                reason = self.st.last_command.reason if self.st.last_command and self.st.last_command.reason else ""
                because = f" ({reason})" if reason else ""
                return f"Canary promoted by {who}{because} before the analysis completed, promotion finished."
            if kind == "promote":
                checks = [c for c in entry.checks or [] if c.value is not None]
                if not checks:
                    return base
                values = ", ".join(f"{c.name} {num(c.value)}" for c in checks if c.value is not None)
                return f"{base[:-1]}; last checks: {values}."
        return base

    def fail_promotion(self, detail: str) -> None:
        """Flagger 1.44 (handleFailedPromotion): keep serving from the canary, 0/100."""
        st = self.st
        self.route(0, 100)
        st.waiting_since = None
        st.last_failure = LastFailure(time=self.now, check=PRIMARY_READINESS_CHECK, value=None, message=detail)
        where = "the primary (advisory)" if self.virtual else f"the canary {self.target}"
        self.set_phase(
            Phase.FAILED,
            f"Promotion failed, primary not ready: {detail}. Traffic stays on {where}.",
        )
        self.record("fail", f"promotion failed, primary not ready: {detail}", checks=False)
        self.event("PromotionFailed", f"Promotion of {self.target} failed, primary not ready: {detail}", "Warning")
        self.alert("error", f"Promotion failed, primary not ready: {detail}")
        self.post_rollout(Phase.FAILED)
        self.wake_in(self.interval)

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, why: str, condition_detail: str, alert_message: str) -> None:
        st = self.st
        self.tally(False, f"rolled back: {why}")
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
        if self.virtual:
            detail = st.last_failure.message if st.last_failure else f"failedChecks set to {st.failed_checks}"
            self.advise("Rollback", f"failed checks threshold reached ({st.failed_checks}/{self.threshold}): {detail}")
            return
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
        if self.virtual:
            self.advise("Rollback", f"progress deadline exceeded: {detail}")
            return
        self.st.last_failure = LastFailure(
            time=self.now, check=PROGRESS_DEADLINE_CHECK, value=None, message=detail
        )
        self.record("rollback", f"progress deadline exceeded: {detail}", checks=False)
        self.rollback(
            f"progress deadline exceeded: {detail}",
            f"progress deadline exceeded: {detail}",
            f"Progress deadline exceeded for {self.target}: {detail}",
        )
