"""What a deployment strategy decides: the next traffic move of one analysis step."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from canary.types import Phase

if TYPE_CHECKING:
    from canary.engine.checks import Checks


class Verdict(enum.Enum):
    STEPPED = "stepped"
    """Traffic moved (or an iteration passed): the analysis goes on next interval."""
    HELD = "held"
    """A gate holds the step (the strategy recorded why)."""
    READY = "ready"
    """The analysis is complete and its gates passed: promote now."""


class Strategy(Protocol):
    name: str
    set_weight: bool
    """The canary.dev/set-weight command applies (weights between 0 and 100 exist)."""
    paced_promotion: bool
    """stepWeightPromotion paces the traffic back to the primary."""

    def advance(self, tick: Checks, phase: Phase) -> Verdict:
        """One analysis step after the checks passed: move traffic or report READY."""
        ...
