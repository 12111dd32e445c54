"""`canary simulate` with sample series: a judged release replayed offline."""

from __future__ import annotations

import numpy as np

from canary.models import Canary
from canary.simulate import render, simulate


def judged(**metric) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "podinfo", "namespace": "demo"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "30s", "threshold": 1, "stepWeight": 20, "maxWeight": 60,
                              "metrics": [{"name": "latency", "templateRef": {"name": "lat"}, "interval": "1m",
                                           "compare": {"tolerance": 10, "minSamples": 20}, **metric}]}},
    })


def lognormal(median: float, seed: int, n: int = 40) -> list[float]:
    return [round(float(v), 2) for v in np.random.default_rng(seed).lognormal(np.log(median), 0.2, n)]


def test_a_slower_canary_is_rolled_back_from_its_samples():
    result = simulate(judged(), {"samples": {"latency": {"canary": lognormal(130, 1), "primary": lognormal(100, 2)}}})
    assert result.outcome == "Failed"
    assert "Fail against the primary" in result.last_failure and "rank" in result.last_failure
    assert "Fail against the primary" in render(result)


def test_an_equal_canary_with_one_series_per_step_is_promoted():
    steps = {"canary": [lognormal(100, s) for s in range(10, 16)],
             "primary": [lognormal(100, s) for s in range(20, 26)]}
    result = simulate(judged(), {"samples": {"latency": steps}})
    assert result.outcome == "Succeeded"


def test_too_few_samples_hold_until_the_deadline():
    result = simulate(judged(), {"samples": {"latency": {"canary": [100.0] * 5, "primary": [100.0] * 5}},
                                 "maxMinutes": 30})
    assert result.outcome == "Failed" and "held the analysis" in result.last_failure
    assert result.timeline[-2].failed_checks == 0


def test_a_dry_run_metric_replayed_does_not_decide():
    result = simulate(judged(dryRun=True), {"samples": {"latency": {"canary": lognormal(130, 1),
                                                                    "primary": lognormal(100, 2)}}})
    assert result.outcome == "Succeeded"
