"""The engine with compared checks and the policies of issue 15: judged verdicts in the
ledger, noData/onError hold bounded by progressDeadlineSeconds, Inconclusive holds,
consecutiveFailures, dryRun metrics that never decide."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from canary.engine.judging import assess, last_weight_change
from canary.models import Metric
from canary.types import MetricResult, Phase, Routes
from tests.unit.test_engine import World, make_canary

Result = Callable[["JudgedWorld", Metric], MetricResult]


def series(median: float, n: int, seed: int, now: float, sigma: float = 0.2) -> tuple[tuple[float, float], ...]:
    values = np.random.default_rng(seed).lognormal(math.log(median), sigma, n)
    return tuple((now - n + i, float(v)) for i, v in enumerate(values))


def compared(canary_median: float, primary_median: float = 100.0, n: int = 60) -> Result:
    def make(world: "JudgedWorld", m: Metric) -> MetricResult:
        world.seed += 2
        now = world.now.timestamp()
        return MetricResult(m.name, "q", canary_median, ok=True,
                            canary_samples=series(canary_median, n, world.seed, now),
                            primary_samples=series(primary_median, n, world.seed + 1, now))
    return make


def bounded(value: float | None, max_: float = 500.0) -> Result:
    def make(world: "JudgedWorld", m: Metric) -> MetricResult:
        ok = value is not None and value <= max_
        msg = "" if value is not None else f"metric {m.name}: no values found for query 'q'"
        return MetricResult(m.name, "q", value, max=max_, ok=ok, message=msg)
    return make


def error(world: "JudgedWorld", m: Metric) -> MetricResult:
    return MetricResult(m.name, "q", None, ok=False, error=True,
                        message=f"metric {m.name}: query 'q' failed: cannot reach http://prom:9090")


def nodata(world: "JudgedWorld", m: Metric) -> MetricResult:
    return MetricResult(m.name, "q", None, ok=False, message=f"metric {m.name}: no values found for query 'q'",
                        canary_samples=(), primary_samples=())


class JudgedWorld(World):
    def __init__(self, canary, results: dict[str, Result]):
        super().__init__(canary)
        self.results = results
        self.seed = 0

    def run_checks(self, obs, check_plan):
        obs = super().run_checks(obs, check_plan)
        if obs.metrics is None:
            return obs
        metrics = tuple(self.results[m.name](self, m) for m in self.canary.spec.analysis.metrics)
        return dataclasses.replace(obs, metrics=metrics)


def released(analysis: dict, results: dict[str, Result], **spec) -> JudgedWorld:
    world = JudgedWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, **analysis}, **spec),
                        results)
    world.initialize()
    world.actions.clear()
    world.weights.clear()
    world.release("rev2")
    return world


LATENCY = {"name": "latency", "templateRef": {"name": "lat"}, "interval": "1m", "compare": {"tolerance": 10}}


def checks(world: World):
    return [c for e in world.status.ledger or [] for c in e.checks or []]


def test_a_slower_canary_is_rolled_back_by_the_judge_and_the_ledger_has_the_numbers():
    world = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(130)})
    world.run_to(Phase.FAILED)
    assert world.promoted == [] and world.routes == Routes(100, 0, False)
    assert "worse" in world.status.last_failure.message or "higher" in world.status.last_failure.message
    failed = [c for c in checks(world) if c.verdict == "Fail"]
    assert failed
    c = failed[-1]
    assert c.test == "rank" and c.p_value < 0.05 and c.shift_low <= c.shift <= c.shift_high
    assert c.canary_samples == 60 and c.primary_samples == 60 and c.statistic is not None
    dumped = c.dump()
    assert "pValue" in dumped and "shiftLow" in dumped and "canarySamples" in dumped


def test_an_equal_canary_is_promoted():
    world = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run_to(Phase.SUCCEEDED)
    assert world.promoted == ["rev2"]
    assert {c.verdict for c in checks(world)} == {"Pass"}


def test_fixed_bound_lets_through_what_the_judge_stops():
    # p99 30 % above the primary but under 500 ms: the bound alone promotes
    world = released({"threshold": 1, "metrics": [{"name": "request-duration", "thresholdRange": {"max": 500}}]},
                     {"request-duration": bounded(130)})
    world.run_to(Phase.SUCCEEDED)
    both = released({"threshold": 1, "metrics": [{"name": "request-duration", "thresholdRange": {"max": 500}},
                                                   LATENCY]},
                    {"request-duration": bounded(130), "latency": compared(130)})
    both.run_to(Phase.FAILED)


def test_no_data_hold_keeps_the_weight_counts_nothing_and_finishes_when_data_arrives():
    world = released({"threshold": 1, "metrics": [{**LATENCY, "noData": "hold"}]}, {"latency": compared(100)})
    world.run(lambda w: w.routes.canary == 20)
    world.results["latency"] = nodata
    for _ in range(5):
        world.tick(10)
    assert world.routes.canary == 20 and world.status.failed_checks == 0
    assert world.status.held_since is not None and world.events("Hold")
    assert world.status.phase == Phase.PROGRESSING
    world.results["latency"] = compared(100)
    world.run_to(Phase.SUCCEEDED)
    assert world.promoted == ["rev2"] and world.status.held_since is None


def test_a_hold_ends_at_the_progress_deadline():
    world = released({"threshold": 5, "metrics": [{**LATENCY, "noData": "hold"}]}, {"latency": compared(100)},
                     progressDeadlineSeconds=60)
    world.run(lambda w: w.routes.canary == 20)
    world.results["latency"] = nodata
    world.run_to(Phase.FAILED, max_ticks=20)
    assert world.status.failed_checks == 0
    assert "held the analysis" in world.status.last_failure.message


def test_no_data_fail_is_flaggers_behaviour():
    world = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run(lambda w: w.routes.canary == 20)
    world.results["latency"] = nodata
    world.run_to(Phase.FAILED)


def test_no_data_pass_advances():
    world = released({"threshold": 1, "metrics": [{**LATENCY, "noData": "pass"}]}, {"latency": nodata})
    world.run_to(Phase.SUCCEEDED)
    assert {c.verdict for c in checks(world)} == {"NoData"}


def test_on_error_hold_rides_out_an_outage_and_default_rolls_back():
    world = released({"threshold": 1, "metrics": [{**LATENCY, "onError": "hold"}]}, {"latency": compared(100)})
    world.run(lambda w: w.routes.canary == 20)
    world.results["latency"] = error
    for _ in range(3):
        world.tick(10)
    assert world.status.phase == Phase.PROGRESSING and world.status.failed_checks == 0
    assert any("onError: hold" in e.message for e in world.events("Hold"))
    world.results["latency"] = compared(100)
    world.run_to(Phase.SUCCEEDED)
    default = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    default.run(lambda w: w.routes.canary == 20)
    default.results["latency"] = error
    default.run_to(Phase.FAILED)
    assert "cannot reach" in default.status.last_failure.message


def test_too_few_samples_hold_instead_of_passing():
    world = released({"threshold": 1, "metrics": [{**LATENCY, "compare": {"minSamples": 20}}]},
                     {"latency": compared(100, n=5)})
    for _ in range(6):
        world.tick(10)
    assert world.routes.canary == 20 and world.promoted == []
    inconclusive = [c for c in checks(world) if c.verdict == "Inconclusive"]
    assert inconclusive and inconclusive[-1].canary_samples == 5


def test_dry_run_failure_never_decides_but_is_recorded_and_alerted():
    shadow = {**LATENCY, "name": "shadow", "dryRun": True}
    world = released({"threshold": 1, "metrics": [{"name": "request-duration", "thresholdRange": {"max": 500}},
                                                   shadow]},
                     {"request-duration": bounded(100), "shadow": compared(200)})
    world.run_to(Phase.SUCCEEDED)
    assert world.promoted == ["rev2"]
    advisory = [c for c in checks(world) if c.name == "shadow"]
    assert advisory and all(c.dry_run for c in advisory) and advisory[-1].verdict == "Fail"
    assert world.events("AdvisoryCheckFailed")
    assert any("Advisory (dryRun)" in a.message for a in world.alerts("warn"))


def test_consecutive_failures_tolerate_isolated_flakes():
    results = {"latency": compared(100)}
    world = released({"consecutiveFailures": 2, "threshold": 0, "stepWeight": 10, "maxWeight": 60,
                      "metrics": [LATENCY]}, results)
    world.run(lambda w: w.routes.canary == 10)
    for _ in range(3):  # fail, pass, fail, pass...: never two in a row
        world.results["latency"] = compared(200)
        world.tick(10)
        world.results["latency"] = compared(100)
        world.tick(10)
    assert world.status.phase == Phase.PROGRESSING and world.status.failed_checks == 3
    world.results["latency"] = compared(200)
    world.run_to(Phase.FAILED)
    assert "2 failed checks in a row" in world.promoted_condition().message


def test_consecutive_failures_beside_an_explicit_threshold():
    world = released({"consecutiveFailures": 3, "threshold": 2, "stepWeight": 10, "metrics": [LATENCY]},
                     {"latency": compared(100)})
    world.run(lambda w: w.routes.canary == 10)
    world.results["latency"] = compared(200)
    world.tick(10)
    world.results["latency"] = compared(100)
    world.tick(10)
    world.results["latency"] = compared(200)
    world.run_to(Phase.FAILED)
    assert world.status.failed_checks == 2  # the cumulative threshold, not three in a row


def test_assess_orders_fail_before_hold_and_keeps_dry_runs_out():
    specs = [Metric.model_validate(m) for m in (
        {"name": "a", "noData": "hold"}, {"name": "b"}, {"name": "c", "dryRun": True})]
    results = (MetricResult("a", "q", None, message="metric a: no values found for query 'q'"),
               MetricResult("b", "q", 5.0, max=1.0, ok=False),
               MetricResult("c", "q", 5.0, max=1.0, ok=False))
    a = assess(specs, results, None)
    assert a.failed.name == "b" and a.hold.name == "a" and [m.name for m in a.advisory] == ["c"]
    assert a.results[2].dry_run and not a.results[2].ok


def test_last_weight_change_from_the_ledger():
    world = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run(lambda w: w.routes.canary == 40)
    change = last_weight_change(world.status.ledger)
    assert change is not None and change == max(e.time for e in world.status.ledger if e.weight == 40)


def test_explain_shows_the_verdicts():
    from canary.cli.explain import explain_text

    world = released({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(130)})
    world.run_to(Phase.FAILED)
    obj = {"metadata": {"name": "podinfo", "namespace": "test"}, "spec": world.canary.spec.dump(),
           "status": world.status.dump()}
    text = explain_text(obj)
    line = next(l for l in text.splitlines() if "vs primary Fail" in l)
    assert "rank" in line and "p=" in line and "shift +" in line and "samples 60/60" in line


def test_an_advisory_canary_is_initialized_as_any_other():
    """(It used to stall with AdvisoryNotSupported; advisory mode: test_engine_advisory.py.)"""
    world = JudgedWorld(make_canary({"interval": "10s", "advisory": True, "metrics": [LATENCY]}),
                        {"latency": compared(100)})
    world.initialize()
    assert world.routes == Routes(100, 0, False) and world.primary_exists and world.promoted == []
    assert world.status.condition("Stalled") is None
