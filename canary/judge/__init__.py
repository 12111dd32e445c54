"""The judge: compares a canary's samples with the primary's and says Pass, Fail,
Inconclusive or NoData, with the numbers behind it. Pure (no I/O, no clock); the metric
provider fetches the samples, the engine applies the policies. See docs/analysis.md."""

from canary.judge.core import clean, judge
from canary.judge.model import (
    MAX_SAMPLES,
    SPREAD_TOLERANCE,
    Criteria,
    Direction,
    Judgement,
    Series,
    TestResult,
    Verdict,
)
from canary.judge.score import Score, Scored, score

__all__ = [
    "MAX_SAMPLES", "SPREAD_TOLERANCE", "Criteria", "Direction", "Judgement", "Series", "TestResult",
    "Verdict", "Score", "Scored", "clean", "judge", "score",
]
