"""Checks a tick consults: webhook gates (confirm-promotion among them), rollback webhooks,
metric verdicts and readiness waits.

In planning mode every check records that it is needed and answers "carry on", so plan()
and step() run the same code and can never disagree about the checks a tick uses.
"""

from __future__ import annotations

from typing import Callable

from canary.engine.advisory import Advisory
from canary.engine.tick import MissingChecks, webhook_detail
from canary.types import MetricResult, Phase, Readiness, Ready, WebhookResult


class Checks(Advisory):
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
            raise MissingChecks(type_)
        return None, False

    def confirm_promotion(self) -> bool:
        """The confirm-promotion gate; while it fails the canary waits in WaitingPromotion."""
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
        self.record("wait", webhook_detail(failed), actor=f"webhook:{failed.name}", action="wait-gate")
        return False

    def rollback_requested(self) -> WebhookResult | None:
        hooks = self.analysis.webhooks_of("rollback")
        if not hooks or not self.obs.rollback_poll:
            return None  # (polled at most once per interval, not on every wake)
        if self.planning:
            self._need("rollback")
            return None
        results = {r.name: r for r in self.obs.webhooks if r.type == "rollback"}
        for hook in hooks:
            result = results.get(hook.name)
            if result is not None and result.ok:
                return result
        if any(hook.name not in results for hook in hooks):
            raise MissingChecks("rollback")
        return None

    def failed_metric(self) -> MetricResult | None:
        specs = self.analysis.metrics or []
        if not specs:
            return None
        if self.planning:
            self.needs_metrics = True
            return None
        if self.obs.metrics is None:
            raise MissingChecks("metrics")
        for metric in self.obs.metrics:
            if not metric.ok or metric.value is None:
                return metric
        seen = {m.name for m in self.obs.metrics}
        if any(spec.name not in seen for spec in specs):
            raise MissingChecks("metrics")
        return None

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

    def wait_for(self, role: str, name: str, readiness: Readiness, give_up: Callable[[str], None]) -> None:
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
