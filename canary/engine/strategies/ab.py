"""A/B testing: the requests that match ``analysis.match`` go to the canary for
``iterations`` steps; afterwards it is promoted and traffic switches back at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from canary.engine.strategies.base import Verdict
from canary.types import Phase

if TYPE_CHECKING:
    from canary.engine.checks import Checks


class ABStrategy:
    name = "ab"
    set_weight = False
    paced_promotion = False

    def advance(self, tick: Checks, phase: Phase) -> Verdict:
        st = tick.st
        total = tick.analysis.iterations or 0
        if st.iterations < total:
            if tick.routes is None or (tick.routes.primary, tick.routes.canary) != (0, 100):
                tick.route(0, 100)
            st.iterations += 1
            tick.event("AdvanceIteration", f"Advance {tick.target} canary iteration {st.iterations}/{total}")
            tick.record("advance", action=f"advance iteration {st.iterations}/{total}")
            return Verdict.STEPPED
        return Verdict.READY if tick.confirm_promotion() else Verdict.HELD
