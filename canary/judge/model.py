"""The judge's inputs and outputs: plain frozen values, no I/O.

A `Series` is what a range query returned for one target: sample times (seconds since the
epoch) and values. `Criteria` is a metric's `compare` block, already defaulted and parsed.
A `Judgement` is the verdict of one check with the numbers that justify it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

Direction = Literal["increase", "decrease", "either"]
TestName = Literal["rank", "dispersion", "rate", "none"]

MAX_SAMPLES = 1000
"""Samples kept per side (the latest ones): bounds the judge's memory (the Hodges-Lehmann
estimate looks at every canary x primary pair) whatever a query returns."""

SPREAD_TOLERANCE = 50.0
"""Percent by which the canary's spread (median absolute deviation) may exceed the primary's
before the dispersion test can fail, unless the metric's tolerance is larger. A spread is a
much noisier estimate than a median; with 10 % the test would cry wolf on equal releases."""


DISPERSION_MIN_SAMPLES = 20
"""The dispersion test runs only with this many samples on each side: a spread estimated
from fewer is too noisy to fail a release on."""


class Verdict(str, Enum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    NODATA = "NoData"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Series:
    """Samples of one target: times (epoch seconds) and values, same length."""

    times: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.times) != len(self.values):
            raise ValueError(f"{len(self.times)} times but {len(self.values)} values")

    @classmethod
    def of(cls, pairs: "list[tuple[float, float]] | tuple[tuple[float, float], ...]") -> "Series":
        return cls(tuple(float(t) for t, _ in pairs), tuple(float(v) for _, v in pairs))

    @classmethod
    def evenly(cls, values: "list[float] | tuple[float, ...]", start: float = 0.0, step: float = 1.0) -> "Series":
        """Values one `step` apart from `start` (for tests and offline replays)."""
        return cls(tuple(start + i * step for i in range(len(values))), tuple(float(v) for v in values))


@dataclass(frozen=True)
class Criteria:
    """How to compare: a metric's `compare` block with its defaults applied."""

    direction: Direction = "increase"
    tolerance: float = 10.0
    """Percent of the primary's median by which the canary may be worse."""
    confidence: float = 0.95
    min_samples: int = 10
    warmup: float = 0.0
    """Seconds after a weight change whose samples are left out."""

    def __post_init__(self) -> None:
        if self.direction not in ("increase", "decrease", "either"):
            raise ValueError(f"direction must be increase, decrease or either, not {self.direction!r}")
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance <= 1000):
            raise ValueError(f"tolerance must be 0..1000 percent, not {self.tolerance!r}")
        if not (0.5 <= self.confidence < 1):
            raise ValueError(f"confidence must be in [0.5, 1), not {self.confidence!r}")
        if self.min_samples < 1:
            raise ValueError(f"minSamples must be at least 1, not {self.min_samples!r}")
        if not (math.isfinite(self.warmup) and self.warmup >= 0):
            raise ValueError(f"warmup must be a non-negative duration, not {self.warmup!r}")

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


@dataclass(frozen=True)
class TestResult:
    """One statistical test of a check.

    rank: statistic = Mann-Whitney U of the canary, shift = Hodges-Lehmann estimate of
    canary - primary with its interval, allowed = the tolerance in the metric's unit.
    dispersion: statistic = U on absolute deviations, shift = estimated spread ratio
    canary/primary with its interval, allowed = the ratio tolerated.
    rate: statistic = share of canary samples worse than the primary's constant value,
    shift as for rank.
    """

    test: TestName
    verdict: Verdict
    statistic: float
    p_value: float
    shift: float
    low: float
    high: float
    allowed: float
    reason: str


@dataclass(frozen=True)
class Judgement:
    """The verdict of one compared check."""

    verdict: Verdict
    reason: str
    canary_samples: int
    primary_samples: int
    test: TestName = "none"
    """The test the headline numbers come from (the failing one, else the rank test)."""
    statistic: float | None = None
    p_value: float | None = None
    shift: float | None = None
    shift_low: float | None = None
    shift_high: float | None = None
    tests: tuple[TestResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.PASS

    def record(self) -> dict[str, object]:
        """JSON-ready numbers for the ledger (pValue as the API spells it)."""
        out: dict[str, object] = {
            "verdict": self.verdict.value,
            "test": self.test,
            "canarySamples": self.canary_samples,
            "primarySamples": self.primary_samples,
        }
        for key, value in (("statistic", self.statistic), ("pValue", self.p_value), ("shift", self.shift),
                           ("shiftLow", self.shift_low), ("shiftHigh", self.shift_high)):
            if value is not None and math.isfinite(value):
                out[key] = float(f"{value:.6g}")
        return out
