"""Deployment strategies, keyed by ``analysis.strategy``. A new strategy is one module and
one line in STRATEGIES (and its value in models.Strategy)."""

from __future__ import annotations

from canary.engine.strategies.ab import ABStrategy
from canary.engine.strategies.base import Strategy, Verdict
from canary.engine.strategies.bluegreen import BlueGreenStrategy
from canary.engine.strategies.canary import CanaryStrategy, next_weight
from canary.models import Analysis

__all__ = ["STRATEGIES", "Strategy", "Verdict", "next_weight", "strategy_of"]

STRATEGIES: dict[str, Strategy] = {
    "canary": CanaryStrategy(),
    "ab": ABStrategy(),
    "bluegreen": BlueGreenStrategy(),
}


def strategy_of(analysis: Analysis) -> Strategy:
    return STRATEGIES.get(analysis.strategy, STRATEGIES["canary"])
