"""The canary state machine (pure: no I/O, no clock, no randomness).

Called by the operator once per tick with the same canary, status and observation:

* ``plan(canary, status, obs) -> CheckPlan``: which webhook types (in call order) and whether
  the metrics must be run before this tick can be decided.
* ``step(canary, status, obs) -> Decision``: the new status (a copy; the input is never
  mutated), the actions to apply in order and the seconds until the engine wants to be called
  again.

Both run the same code (``plan`` in "planning" mode), so they never disagree about the checks
a tick uses. The phases are Flagger's; where and why we differ is in docs/design.md, the
commands are in docs/cli.md. Modules: ``decide`` (entry points, guards, phase table),
``tick`` (per-tick context), ``checks``, ``lifecycle``, ``outcome`` (promotion, rollback),
``commands`` (the command rules, shared with the CLI) and ``strategies``.
"""

from canary.engine.commands import Facts, initializing, refusal
from canary.engine.decide import _Tick, plan, step
from canary.engine.strategies import STRATEGIES, Strategy, Verdict, next_weight, strategy_of
from canary.engine.tick import (
    ABORT_CHECK,
    PRIMARY_READINESS_CHECK,
    PROGRESS_DEADLINE_CHECK,
    PROMOTED,
    RETRY_AFTER_MISSING_CHECKS,
    STALLED,
    Decision,
    MissingChecks as _MissingChecks,
    metric_failure_detail,
)

__all__ = [
    "Decision",
    "plan",
    "step",
    "next_weight",
    "metric_failure_detail",
    "PROMOTED",
    "STALLED",
    "PRIMARY_READINESS_CHECK",
    "PROGRESS_DEADLINE_CHECK",
    "ABORT_CHECK",
    "RETRY_AFTER_MISSING_CHECKS",
    "Facts",
    "refusal",
    "initializing",
    "STRATEGIES",
    "Strategy",
    "Verdict",
    "strategy_of",
]
