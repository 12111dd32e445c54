"""Canary: traffic moves to the canary in weight steps up to maxWeight (optionally after a
mirroring step), then the canary is promoted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canary.engine.strategies.base import Verdict
from canary.engine.tick import webhook_detail
from canary.models import Analysis
from canary.types import Phase

if TYPE_CHECKING:
    from canary.engine.checks import Checks


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


class CanaryStrategy:
    name = "canary"
    set_weight = True
    paced_promotion = True

    def advance(self, tick: Checks, phase: Phase) -> Verdict:
        analysis = tick.analysis
        weight = tick.st.canary_weight
        if weight >= analysis.max_weight_value:
            return Verdict.READY if tick.confirm_promotion() else Verdict.HELD
        mirrored = bool(tick.routes and tick.routes.mirrored)
        if not mirrored and phase is not Phase.WAITING_PROMOTION:
            failed, muted = tick.gate("confirm-traffic-increase")
            if failed is not None:
                tick.event(
                    "WaitingApproval",
                    f"Halt {tick.target} advancement waiting for traffic increase approval {failed.name}",
                )
                tick.record("wait", webhook_detail(failed), actor=f"webhook:{failed.name}", action="wait-gate")
                if not muted:
                    tick.alert("warn", "Canary traffic increase is waiting for approval.")
                return Verdict.HELD
        if analysis.mirror and weight == 0 and not mirrored:
            tick.route(100, 0, mirror=True)
            tick.event("AdvanceWeight", f"Advance {tick.target} canary weight 0 (mirroring traffic)")
            tick.record("advance", "mirroring traffic to the canary", action="advance 0")
            return Verdict.STEPPED
        new = next_weight(analysis, weight)
        tick.route(100 - new, new)
        tick.event("AdvanceWeight", f"Advance {tick.target} canary weight {new}")
        tick.record("advance", f"canary weight {weight} -> {new}", action=f"advance {new}")
        return Verdict.STEPPED
