"""The phases in the order a release meets them: initialization, steady phases and new
revisions, Waiting (confirm-rollout), the analysis (Progressing, WaitingPromotion)."""

from __future__ import annotations

from canary.engine import judging
from canary.engine.outcome import Outcomes
from canary.engine.strategies import Verdict, strategy_of
from canary.engine.tick import PRIMARY_READINESS_CHECK, webhook_detail
from canary.models import LastFailure
from canary.types import Initialize, Phase


class Lifecycle(Outcomes):
    # -- initialization ----------------------------------------------------------------------

    def initializing(self) -> None:
        st, obs = self.st, self.obs
        if st.phase != Phase.INITIALIZING:
            self.set_phase(Phase.INITIALIZING)
            st.waiting_since = self.now  # the primary is created now: no "not ready" event
        readiness = self.primary_readiness()
        # no routing object is created or taken over before the primary can serve: onboarding a
        # live app must not send its traffic to pods that are not ready (Flagger waits too)
        self.actions.append(Initialize(routes=readiness.ready))
        if not readiness.ready:
            self.wait_for("Primary", self.primary, readiness, self.fail_initialization)
            return
        routed = obs.routes is not None and (obs.routes.primary, obs.routes.canary) == (100, 0)
        self.route(100, 0)
        if not routed:
            # Initialized means the routes serve the primary: say it once they are seen, not
            # when they are asked for (the status is written before the effects)
            self.wake_in(min(self.interval, 1.0))
            return
        self.scale(up=False)
        self.sync_revision()
        st.last_promoted_spec = obs.revision
        self.intend(primary_revision=obs.revision)
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
        self.promote_primary(self.obs.revision)
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
            # traffic left on the target by a failed promotion goes back to the primary as soon
            # as it can serve: a new revision waiting for approval must not keep it
            clean = self.routes is not None and (self.routes.canary, self.routes.mirrored) == (0, False)
            if not clean and self.routes is not None and self.primary_readiness().ready:
                self.route(100, 0)
            if st.phase != Phase.WAITING:
                self.set_phase(Phase.WAITING)
                if not muted:
                    self.alert("warn", "Canary is waiting for approval.")
            self.event("WaitingApproval", f"Halt {self.target} advancement waiting for approval {failed.name}")
            self.record("wait", webhook_detail(failed), actor=f"webhook:{failed.name}", action="wait-gate")
            self.take_step()
            return
        self.start_run()

    def start_run(self, message: str = "", actor: str = "operator") -> None:
        self.reset_advisory()
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
        self.reset_advisory()
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
        if self.advised():
            self.await_decision()
            return
        if judging.limit_reached(self):
            self.rollback_failed_checks()
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

    def await_decision(self) -> None:
        """An advisory Canary with its verdict: a person's promote promotes for real (abort,
        rollback webhooks and new revisions are decided as in any run)."""
        cmd = self.fresh("promote")
        if cmd is not None:
            adv = self.advisory_status()
            would = "would promote" if adv.verdict == "Promote" else "would roll back"
            self.applied(cmd, f"promoting for real (the advisory analysis {would})")
            self.promote(record=False)
            return
        self.await_person()

    def restart(self) -> None:
        self.reset_advisory()
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
        first = (not st.first_step_done and st.canary_weight == 0 and st.iterations == 0
                 and not (self.analysis.mirror and mirrored))
        if first:
            self.event("StartAnalysis", f"Starting canary analysis for {self.target}")
            failed, _ = self.gate("pre-rollout")
            if failed is not None:
                self.count_failure(failed.name, None, webhook_detail(failed))
                return
            st.first_step_done = True
        else:
            failed, _ = self.gate("rollout")
            if failed is not None:
                self.count_failure(failed.name, None, webhook_detail(failed))
                return
            if not judging.metric_step(self):
                return
        st.consecutive_failures = None
        if strategy_of(self.analysis).advance(self, phase) is Verdict.READY:
            if self.virtual:
                self.advise("Promote", f"the analysis completed at weight {st.canary_weight}{self.checks_said()}")
            else:
                self.promote()

    def rollback_failed_checks(self) -> None:
        why = judging.limit_reached(self)
        if self.virtual:
            detail = self.st.last_failure.message if self.st.last_failure else ""
            count = f"failed checks threshold reached ({self.st.failed_checks}/{self.threshold})"
            self.advise("Rollback", f"{count if why in (None, 'threshold') else why}: {detail}")
            return
        if why in (None, "threshold"):
            self.rollback_threshold()
            return
        detail = self.st.last_failure.message if self.st.last_failure else ""
        self.record("rollback", f"{why}: {detail}")
        self.rollback(f"{why}: {detail}", f"{why}, last failure: {detail}", f"{why.capitalize()}: {detail}")

    def count_failure(self, check: str, value: float | None, detail: str) -> None:
        st = self.st
        st.failed_checks += 1
        if self.analysis.consecutive_failures:
            st.consecutive_failures = (st.consecutive_failures or 0) + 1
        st.last_failure = LastFailure(time=self.now, check=check, value=value, message=detail)
        self.event("Halt", f"Halt {self.target} advancement: {detail}", "Warning")
        if judging.limit_reached(self):
            self.rollback_failed_checks()
        else:
            self.record("halt", f"{detail} (failed checks {st.failed_checks}/{self.threshold})")
