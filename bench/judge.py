"""Offline benchmark of the judge (no testbed): `python -m bench.judge [--releases N]`.

Simulates judged releases: each release is `steps` analysis steps, each step judges every
metric of the scenario on fresh samples of the canary and of the primary, and the release
fails at the first failed check (threshold 1, the strictest setting). Noisy-but-equal
scenarios draw both sides from the same distribution with different seeds: every failure is
a false positive. Bad scenarios are the issue's cases: every pass is a miss.

Writes bench-results/judge-<time>.json and prints a summary. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from canary.judge import Criteria, Series, Verdict, judge

REPO = Path(__file__).resolve().parent.parent
Gen = Callable[[np.random.Generator, int], np.ndarray]


def latency(median: float, sigma: float, phi: float = 0.0) -> Gen:
    """Lognormal p99-like samples; phi > 0 makes successive samples AR(1)-correlated (as
    overlapping rate windows of a range query are)."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.normal(0.0, 1.0, n)
        if phi:
            for i in range(1, n):
                z[i] = phi * z[i - 1] + math.sqrt(1 - phi * phi) * z[i]
        return median * np.exp(sigma * z)
    return draw


def error_percent(rps: float, window: float, rate: float) -> Gen:
    """Per-sample error percentage of `rps` requests over `window` seconds; NaN when no request."""
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        requests = rng.poisson(rps * window, n)
        errors = rng.binomial(requests, rate)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(requests > 0, 100.0 * errors / np.maximum(requests, 1), np.nan)
    return draw


def success_percent(rps: float, window: float, rate: float) -> Gen:
    err = error_percent(rps, window, rate)
    return lambda rng, n: 100.0 - err(rng, n)


@dataclass(frozen=True)
class Check:
    name: str
    canary: Gen
    primary: Gen
    criteria: Criteria


@dataclass(frozen=True)
class Scenario:
    name: str
    bad: bool
    checks: tuple[Check, ...]


LAT = Criteria(direction="increase", tolerance=10, confidence=0.95, min_samples=20)
ERR = Criteria(direction="increase", tolerance=10, confidence=0.95, min_samples=20)
SUCC = Criteria(direction="decrease", tolerance=1, confidence=0.95, min_samples=20)


def scenarios() -> list[Scenario]:
    base = latency(100, 0.25)
    equal = (
        Check("p99-latency", latency(100, 0.25), base, LAT),
        Check("success-rate", success_percent(20, 2, 0.001), success_percent(20, 2, 0.001), SUCC),
        Check("errors", error_percent(20, 2, 0.0), error_percent(20, 2, 0.0), ERR),
    )
    return [
        Scenario("equal", False, equal),
        Scenario("equal, latency only", False, equal[:1]),
        Scenario("equal, autocorrelated samples (phi 0.8)", False,
                 (Check("p99-latency", latency(100, 0.25, 0.8), latency(100, 0.25, 0.8), LAT),)),
        Scenario("p99 latency +30%", True, (Check("p99-latency", latency(130, 0.25), base, LAT),)),
        Scenario("latency twice as variable, same median", True,
                 (Check("p99-latency", latency(100, 0.5), base, LAT),)),
        Scenario("0.5% errors where the primary has none (20 rps)", True,
                 (Check("errors", error_percent(20, 2, 0.005), error_percent(20, 2, 0.0), ERR),)),
        Scenario("0.5% errors where the primary has none (1 rps)", True,
                 (Check("errors", error_percent(1, 0.5, 0.005), error_percent(1, 0.5, 0.0), ERR),)),
    ]


def run_release(s: Scenario, rng: np.random.Generator, steps: int, samples: int) -> tuple[dict[str, str], dict[str, int]]:
    """Outcomes of one release under two policies, and its check verdict counts.

    threshold-1: Fail at the first failed check (Flagger's threshold 1, the strictest);
    consecutive-2: Fail only when one metric fails two checks in a row (consecutiveFailures 2).
    Inconclusive: no failure but some check could not be judged."""
    counts = {v.value: 0 for v in Verdict}
    fails = {c.name: [False] * steps for c in s.checks}
    unjudged = False
    for i in range(steps):
        for check in s.checks:
            j = judge(Series.evenly(list(check.canary(rng, samples))),
                      Series.evenly(list(check.primary(rng, samples))), check.criteria)
            counts[j.verdict.value] += 1
            fails[check.name][i] = j.verdict is Verdict.FAIL
            unjudged |= j.verdict in (Verdict.NODATA, Verdict.INCONCLUSIVE)
    any_fail = any(any(f) for f in fails.values())
    two_in_row = any(a and b for f in fails.values() for a, b in zip(f, f[1:]))
    fallback = "Inconclusive" if unjudged else "Pass"
    return ({"threshold-1": "Fail" if any_fail else fallback,
             "consecutive-2": "Fail" if two_in_row else fallback}, counts)


POLICIES = ("threshold-1", "consecutive-2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--releases", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10, help="analysis steps per release")
    ap.add_argument("--samples", type=int, default=30, help="samples per side per check")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", type=Path, default=REPO / "bench-results")
    args = ap.parse_args(argv)
    results = []
    start = time.monotonic()
    for index, s in enumerate(scenarios()):
        rng = np.random.default_rng([args.seed, index])  # each scenario its own stream
        outcomes = {p: {"Pass": 0, "Fail": 0, "Inconclusive": 0} for p in POLICIES}
        verdicts = {v.value: 0 for v in Verdict}
        for _ in range(args.releases):
            outcome, counts = run_release(s, rng, args.steps, args.samples)
            for p in POLICIES:
                outcomes[p][outcome[p]] += 1
            for k, v in counts.items():
                verdicts[k] += v
        checks = sum(verdicts.values())
        row: dict[str, object] = {"scenario": s.name, "bad": s.bad, "releases": args.releases,
                                  "outcomes": outcomes, "checkVerdicts": verdicts}
        key = "power" if s.bad else "falsePositiveRate"
        row[key] = {p: outcomes[p]["Fail"] / args.releases for p in POLICIES}
        if not s.bad:
            row["falsePositivePerCheck"] = verdicts["Fail"] / checks
        results.append(row)
        figures = ", ".join(f"{p} {v:.1%}" for p, v in row[key].items())  # type: ignore[union-attr]
        extra = "" if s.bad else f"; {verdicts['Fail'] / checks:.2%} of checks"
        print(f"{s.name:<50} {'power' if s.bad else 'false positives'}: {figures}{extra}; "
              f"passed {outcomes['threshold-1']['Pass']}, inconclusive {outcomes['threshold-1']['Inconclusive']}")
    report = {
        "benchmark": "judge",
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": {"releases": args.releases, "steps": args.steps, "samples": args.samples, "seed": args.seed,
                     "latency": LAT.__dict__, "errors": ERR.__dict__, "successRate": SUCC.__dict__},
        "seconds": round(time.monotonic() - start, 1),
        "scenarios": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"judge-{report['time'].replace(':', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
