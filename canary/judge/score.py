"""A score over weighted checks, as Kayenta's classifier does it, minus its silent passes.

score = 100 x (weight of passing checks) / (weight of passing + failing checks). NoData and
Inconclusive checks are left out of the ratio, as in Kayenta, but where Kayenta counts a
group with nothing left as 100 this returns Inconclusive, and so it does when half or more
of the weight could not be judged (Kayenta sets the score to 0 then). A failing critical
check makes the score 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from canary.judge.model import Verdict

Classification = Literal["Pass", "Marginal", "Fail", "Inconclusive"]


@dataclass(frozen=True)
class Scored:
    name: str
    verdict: Verdict
    weight: float = 1.0
    critical: bool = False


@dataclass(frozen=True)
class Score:
    score: float | None
    classification: Classification
    reason: str


def score(checks: Sequence[Scored], pass_threshold: float = 75.0, marginal_threshold: float = 50.0) -> Score:
    if not 0 <= marginal_threshold <= pass_threshold <= 100:
        raise ValueError("need 0 <= marginal <= pass <= 100")
    if any(c.weight < 0 for c in checks):
        raise ValueError("weights must not be negative")
    total = sum(c.weight for c in checks)
    if not checks or total == 0:
        return Score(None, "Inconclusive", "nothing was judged")
    critical = [c.name for c in checks if c.critical and c.verdict is Verdict.FAIL]
    if critical:
        return Score(0.0, "Fail", f"critical check failed: {', '.join(critical)}")
    unjudged = sum(c.weight for c in checks if c.verdict in (Verdict.NODATA, Verdict.INCONCLUSIVE))
    if unjudged * 2 >= total:
        return Score(None, "Inconclusive", f"{unjudged:g} of {total:g} weight could not be judged")
    passed = sum(c.weight for c in checks if c.verdict is Verdict.PASS)
    value = round(100.0 * passed / (total - unjudged), 2)
    failed = [c.name for c in checks if c.verdict is Verdict.FAIL]
    detail = f"failed: {', '.join(failed)}" if failed else "all judged checks passed"
    if value >= pass_threshold:
        return Score(value, "Pass", detail)
    if value >= marginal_threshold:
        return Score(value, "Marginal", detail)
    return Score(value, "Fail", detail)
