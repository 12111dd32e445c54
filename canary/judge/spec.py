"""From the API's `compare` block to the judge's Criteria (the defaults live here)."""

from __future__ import annotations

from canary.judge.model import Criteria
from canary.models import MetricCompare

DEFAULT_TOLERANCE = 10.0
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES = 10


def criteria_for(compare: MetricCompare) -> Criteria:
    return Criteria(
        direction=compare.direction or "increase",
        tolerance=DEFAULT_TOLERANCE if compare.tolerance is None else float(compare.tolerance),
        confidence=DEFAULT_CONFIDENCE if compare.confidence is None else float(compare.confidence),
        min_samples=compare.min_samples or DEFAULT_MIN_SAMPLES,
        warmup=compare.warmup_seconds,
    )
