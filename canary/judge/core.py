"""judge(): samples of the canary and of the primary in, a verdict out. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from canary.judge.model import (
    DISPERSION_MIN_SAMPLES,
    MAX_SAMPLES,
    SPREAD_TOLERANCE,
    Criteria,
    Judgement,
    Series,
    TestResult,
    Verdict,
)
from canary.judge.stats import dispersion_test, rank_test, rate_test, spread_measurable


def clean(series: Series, weight_changes: Sequence[float], warmup: float) -> tuple[np.ndarray, int]:
    """(kept values, number of finite samples before the warm-up cut).

    NaN and infinite values (Prometheus's 0/0 when a target had no requests) are dropped; so
    are samples at or after a weight change and less than `warmup` seconds after it. The latest
    MAX_SAMPLES remain."""
    times = np.asarray(series.times, dtype=float)
    values = np.asarray(series.values, dtype=float)
    finite = np.isfinite(values) & np.isfinite(times)
    order = np.argsort(times[finite], kind="stable")  # time order: the serial correlation needs it
    times, values = times[finite][order], values[finite][order]
    seen = values.size
    if warmup > 0 and len(weight_changes) and values.size:
        changes = np.sort(np.asarray(weight_changes, dtype=float))
        idx = np.searchsorted(changes, times, side="right") - 1
        since = np.where(idx >= 0, times - changes[np.maximum(idx, 0)], np.inf)
        keep = since >= warmup
        times, values = times[keep], values[keep]
    if values.size > MAX_SAMPLES:
        values = values[-MAX_SAMPLES:]
    return values, seen


def traffic_factor(canary_share: float | None) -> float:
    """How much more spread the canary's samples have from traffic alone: a sample that
    aggregates the requests of a window (a mean, a rate, a quantile) varies as
    1/sqrt(requests), and a canary serving share s of the traffic has (1-s)/s times fewer
    requests than the primary. 1 when unknown or s >= 0.5."""
    if canary_share is None or not 0 < canary_share < 0.5:
        return 1.0
    return math.sqrt((1.0 - canary_share) / canary_share)


def judge(canary: Series, primary: Series, criteria: Criteria,
          weight_changes: Sequence[float] = (), spread_tolerance: float = SPREAD_TOLERANCE,
          canary_share: float | None = None) -> Judgement:
    """Compare the canary's samples with the primary's.

    NoData: a side has no finite sample at all. Inconclusive: fewer than minSamples on a side
    after the warm-up cut (never a silent pass). `canary_share` (0..1, the canary's share of
    the traffic while the samples were taken) widens the spread the dispersion test
    tolerates by what the canary's smaller request count explains. Otherwise: the rate test if the primary's
    samples are all one value, else the rank test and (when the primary's spread is measurable
    and each side has DISPERSION_MIN_SAMPLES) the dispersion test, each then at half the error
    rate; Fail if any fails.
    """
    c, c_seen = clean(canary, weight_changes, criteria.warmup)
    p, p_seen = clean(primary, weight_changes, criteria.warmup)
    if c_seen == 0 or p_seen == 0:
        empty = " and ".join(name for name, seen in (("canary", c_seen), ("primary", p_seen)) if seen == 0)
        return Judgement(Verdict.NODATA, f"no samples for the {empty}", c.size, p.size)
    if c.size < criteria.min_samples or p.size < criteria.min_samples:
        cut = c_seen - c.size + p_seen - p.size
        why = f" ({cut} left out in the {criteria.warmup:g}s warm-up)" if cut else ""
        return Judgement(Verdict.INCONCLUSIVE,
                         f"too few samples: canary {c.size}, primary {p.size}, need {criteria.min_samples} "
                         f"each{why}", c.size, p.size)
    results: tuple[TestResult, ...]
    if np.all(p == p[0]):
        results = (rate_test(c, p, criteria),)
    elif spread_measurable(p) and min(c.size, p.size) >= DISPERSION_MIN_SAMPLES:
        # two tests of one check: each at half the error rate (Bonferroni), so that an equal
        # canary fails the check with probability at most 1 - confidence
        halved = replace(criteria, confidence=1.0 - criteria.alpha / 2.0)
        results = (rank_test(c, p, halved),
                   dispersion_test(c, p, halved, spread_tolerance, traffic_factor(canary_share)))
    else:
        results = (rank_test(c, p, criteria),)
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    unsure = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    head = failed[0] if failed else unsure[0] if unsure else results[0]
    verdict = Verdict.FAIL if failed else Verdict.INCONCLUSIVE if unsure else Verdict.PASS
    return Judgement(verdict, f"{head.test}: {head.reason}", int(c.size), int(p.size), head.test,
                     head.statistic, head.p_value, head.shift, head.low, head.high, results)
