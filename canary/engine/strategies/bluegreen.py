"""Blue/Green: the canary is analysed for ``iterations`` steps without user traffic (or with
mirrored traffic); once confirmed, all traffic switches to it for one step, then it is
promoted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canary.engine.strategies.base import Verdict
from canary.types import Phase

if TYPE_CHECKING:
    from canary.engine.checks import Checks


class BlueGreenStrategy:
    name = "bluegreen"
    set_weight = False
    paced_promotion = True

    def advance(self, tick: Checks, phase: Phase) -> Verdict:
        st = tick.st
        total = tick.analysis.iterations or 0
        if st.iterations < total:
            if tick.analysis.mirror and not (tick.routes and tick.routes.mirrored):
                tick.route(100, 0, mirror=True)
            st.iterations += 1
            tick.event("AdvanceIteration", f"Advance {tick.target} canary iteration {st.iterations}/{total}")
            tick.record("advance", action=f"advance iteration {st.iterations}/{total}")
            return Verdict.STEPPED
        if st.iterations == total:
            if not tick.confirm_promotion():
                return Verdict.HELD
            tick.route(0, 100)
            st.iterations += 1
            tick.event("RouteToCanary", f"Routing all traffic to canary {tick.target}")
            tick.record("advance", "all traffic routed to the canary before the promotion", action="advance 100")
            return Verdict.STEPPED
        return Verdict.READY
