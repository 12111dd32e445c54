"""The statistical tests, on cleaned samples (numpy arrays of finite floats, each side
non-empty). scipy does the statistics; this module only frames the questions:

* rank: is the canary worse than the primary by more than the tolerance? A one-sided
  Mann-Whitney U test of H0 "shift <= allowed" (the canary's samples moved back by the allowed
  amount), with the Hodges-Lehmann estimate of the shift and its distribution-free interval.
* dispersion: is the canary's spread larger than the primary's by more than the spread
  tolerance? The same one-sided rank test on absolute deviations from each side's median.
* rate: the primary never varies (a counter that is zero, a success rate pinned at 100 %):
  does the canary have significantly more samples worse than that value? Fisher's exact test.

A test whose samples are so serially correlated that it could not have failed even a canary
worse in every sample says Inconclusive, not Pass: the engine holds and judges again.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from canary.judge.model import Criteria, Direction, TestResult, Verdict

Array = np.ndarray


def _sps() -> Any:
    """scipy.stats, imported on first use: it costs the operator ~70 MiB of RSS and a second of
    start-up, and most Canaries have no comparison check."""
    from scipy import stats

    return stats


def hodges_lehmann(canary: Array, primary: Array, confidence: float,
                   inflate: float = 1.0) -> tuple[float, float, float]:
    """Median of all canary - primary differences and its two-sided `confidence` interval
    (order statistics of the differences at the Mann-Whitney critical values, normal
    approximation without tie correction, the variance multiplied by `inflate`)."""
    diffs = np.sort(np.subtract.outer(canary, primary).ravel())
    n, m = canary.size, primary.size
    total = diffs.size
    estimate = float(np.median(diffs))
    z = float(_sps().norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    k = int(math.floor(n * m / 2.0 - z * math.sqrt(inflate * n * m * (n + m + 1) / 12.0)))
    k = min(max(k, 0), (total - 1) // 2)
    return estimate, float(diffs[k]), float(diffs[total - 1 - k])


MAX_LAG1 = 0.9
"""Serial correlation above this is taken as 0.9 (variance inflation at most 19x)."""


def lag1(x: Array) -> float:
    """Lag-1 autocorrelation of a series in time order, with Kendall's first-order bias
    correction (the plain estimate is low by about (1 + 3r)/n on short series); 0 for fewer
    than 3 samples or no spread."""
    n = x.size
    if n < 3:
        return 0.0
    d = x - x.mean()
    denom = float(np.dot(d, d))
    if denom == 0:
        return 0.0
    r = float(np.dot(d[1:], d[:-1]) / denom)
    return (n * r + 1.0) / (n - 3.0) if n > 3 else r


def inflation(x: Array, y: Array) -> float:
    """Variance inflation (1 + r) / (1 - r) of a rank statistic for AR(1)-like series, r the
    pooled lag-1 autocorrelation of each side's own ranks (so shifting a side changes nothing;
    only positive r counts: negative estimates on short series are noise and never make a
    test bolder)."""
    r = (x.size * lag1(_sps().rankdata(x)) + y.size * lag1(_sps().rankdata(y))) / (x.size + y.size)
    r = min(max(r, 0.0), MAX_LAG1)
    return (1.0 + r) / (1.0 - r)


def _one_sided(x: Array, y: Array, alternative: str, inflate: float = 1.0) -> tuple[float, float]:
    """(U of x, p) for "x tends to be greater/less than y"; p = 1 when nothing differs.

    With `inflate` > 1 (serially correlated samples) the p-value is recomputed from the
    normal score of the test with its variance multiplied by `inflate`."""
    if np.unique(np.concatenate([x, y])).size < 2:
        return float(x.size * y.size) / 2.0, 1.0
    res = _sps().mannwhitneyu(x, y, alternative=alternative)
    p = float(res.pvalue)
    if math.isnan(p):
        return float(res.statistic), 1.0
    if inflate > 1.0:
        p = float(_sps().norm.sf(_sps().norm.isf(p) / math.sqrt(inflate)))
    return float(res.statistic), min(1.0, p)


def _directed(x: Array, y: Array, allowed: float, direction: Direction, inflate: float) -> tuple[float, float]:
    """One-sided U test(s) of "x is worse than y by more than `allowed`"."""
    if direction == "increase":
        return _one_sided(x - allowed, y, "greater", inflate)
    if direction == "decrease":
        return _one_sided(x + allowed, y, "less", inflate)
    up = _one_sided(x - allowed, y, "greater", inflate)
    down = _one_sided(x + allowed, y, "less", inflate)
    worst = up if up[1] <= down[1] else down
    return worst[0], min(1.0, 2.0 * worst[1])  # Bonferroni over the two sides


def least_p(n: int, m: int, direction: Direction, inflate: float) -> float:
    """The smallest p-value a rank test of `n` against `m` samples can give at this variance
    inflation: that of complete separation (every canary sample worse than every primary one).
    When it is not below alpha the test could not have failed any canary, and its pass says
    nothing."""
    worse, better = np.arange(n, dtype=float) + m, np.arange(m, dtype=float)
    if direction == "decrease":
        worse, better = -worse, -better
    return _directed(worse, better, 0.0, direction, inflate)[1]


def _could_not_fail(n: int, m: int, direction: Direction, inflate: float, alpha: float) -> str:
    """'' when a rank test of these sizes and inflation can fail; else why it cannot, for its
    reason (only serial correlation makes a test this weak: without it, minSamples decides)."""
    if inflate <= 1.0 or least_p(n, m, direction, inflate) < alpha - 1e-12:
        return ""
    return (f": {n}+{m} samples this serially correlated could not show a difference even if every "
            f"canary sample were worse, too few to judge (a longer interval gives more)")


def _serial(inflate: float) -> str:
    return f" (serial correlation: variance x{inflate:.2g})" if inflate > 1.05 else ""


def _sign(value: float) -> str:
    return f"{value:+.4g}"


def rank_test(canary: Array, primary: Array, criteria: Criteria) -> TestResult:
    allowed = criteria.tolerance / 100.0 * abs(float(np.median(primary)))
    inflate = inflation(canary, primary)
    u, p = _directed(canary, primary, allowed, criteria.direction, inflate)
    shift, low, high = hodges_lehmann(canary, primary, criteria.confidence, inflate)
    failed = p < criteria.alpha
    worse = {"increase": "higher", "decrease": "lower", "either": "different"}[criteria.direction]
    reason = (f"shift {_sign(shift)} [{_sign(low)}, {_sign(high)}], "
              f"{'is' if failed else 'not shown to be'} {worse} than the primary by more than "
              f"{allowed:.4g} ({criteria.tolerance:g}% of its median), p={p:.3g}{_serial(inflate)}")
    weak = "" if failed else _could_not_fail(canary.size, primary.size, criteria.direction, inflate, criteria.alpha)
    verdict = Verdict.FAIL if failed else Verdict.INCONCLUSIVE if weak else Verdict.PASS
    return TestResult("rank", verdict, u, p, shift, low, high, allowed, reason + weak)


def spread_measurable(primary: Array) -> bool:
    """The dispersion test needs a primary whose median absolute deviation is not zero: when
    most of its samples are one value (0 errors, 100 % success) the spread is not a scale."""
    return bool(np.median(np.abs(primary - np.median(primary))) > 0)


def dispersion_test(canary: Array, primary: Array, criteria: Criteria, spread_tolerance: float,
                    traffic: float = 1.0) -> TestResult:
    """More spread is worse whatever the direction; `traffic` (>= 1) is the extra spread the
    canary's smaller share of the requests explains. The ratio estimate and interval come from
    the Hodges-Lehmann estimate on log absolute deviations (zero deviations carry no scale
    and are left out of the estimate, not of the test)."""
    a = np.abs(canary - np.median(canary))
    b = np.abs(primary - np.median(primary))
    factor = (1.0 + max(spread_tolerance, criteria.tolerance) / 100.0) * traffic
    inflate = inflation(a, b)
    u, p = _one_sided(a, b * factor, "greater", inflate)
    la, lb = np.log(a[a > 0]), np.log(b[b > 0])
    if la.size and lb.size:
        est, lo, hi = (math.exp(v) for v in hodges_lehmann(la, lb, criteria.confidence, inflate))
    else:
        est = lo = hi = math.nan
    failed = p < criteria.alpha
    reason = (f"spread ratio {est:.3g} [{lo:.3g}, {hi:.3g}], {'is' if failed else 'not shown to be'} "
              f"above {factor:.3g}, p={p:.3g}{_serial(inflate)}")
    weak = "" if failed else _could_not_fail(a.size, b.size, "increase", inflate, criteria.alpha)
    verdict = Verdict.FAIL if failed else Verdict.INCONCLUSIVE if weak else Verdict.PASS
    return TestResult("dispersion", verdict, u, p, est, lo, hi, factor, reason + weak)


def rate_test(canary: Array, primary: Array, criteria: Criteria) -> TestResult:
    """For a primary whose samples are all one value v: the share of canary samples worse
    than v by more than the tolerance, against the primary's share (zero), Fisher's exact test."""
    v = float(primary[0])
    allowed = criteria.tolerance / 100.0 * abs(v)
    if criteria.direction == "increase":
        worse = canary > v + allowed
    elif criteria.direction == "decrease":
        worse = canary < v - allowed
    else:
        worse = np.abs(canary - v) > allowed
    k, n, m = int(worse.sum()), canary.size, primary.size
    # serially correlated canary samples (an error burst spans several overlapping windows):
    # the counts are worth fewer independent samples
    r = min(max(lag1(worse.astype(float)), 0.0), MAX_LAG1)
    inflate = (1.0 + r) / (1.0 - r)
    ke, ne, me = (max(1, round(x / inflate)) for x in (k, n, m))
    p = 1.0 if k == 0 else float(_sps().fisher_exact([[ke, ne - ke], [0, me]], alternative="greater").pvalue)
    shift, low, high = hodges_lehmann(canary, primary, criteria.confidence)
    failed = p < criteria.alpha
    reason = (f"{k} of {n} canary samples worse than the primary's constant {v:.4g} "
              f"(beyond {allowed:.4g}), 0 of {m} primary samples, p={p:.3g}{_serial(inflate)}")
    verdict = Verdict.FAIL if failed else Verdict.PASS
    # the smallest p-value these effective counts allow (every canary sample worse): when serial
    # correlation left so few independent samples that even that is not significant, the test
    # could not have failed any canary, and its pass says nothing (the user's minSamples counts
    # raw samples; without correlation they decide alone)
    if not failed and inflate > 1.0 and 1.0 / math.comb(ne + me, ne) > criteria.alpha - 1e-12:
        verdict = Verdict.INCONCLUSIVE
        reason += f": {ne}+{me} independent samples' worth, too few to judge"
    return TestResult("rate", verdict, k / n, p, shift, low, high, allowed, reason)
