"""The API of issue 15 in the models and the CRD: the fields, their defaults and bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from canary.judge import Criteria
from canary.judge.spec import criteria_for
from canary.models import Analysis, Canary, Metric, MetricCompare

REPO = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = {
    "consecutiveFailures": 0,
    "advisory": False,
    "metrics": [{
        "name": "latency-vs-primary",
        "templateRef": {"name": "latency-mean"},
        "interval": "1m",
        "thresholdRange": {"max": 500},
        "compare": {"baseline": "primary", "direction": "increase", "tolerance": 10, "confidence": 0.95,
                    "minSamples": 20, "warmup": "30s"},
        "noData": "fail",
        "onError": "fail",
        "dryRun": False,
    }],
}


def test_the_issue_example_round_trips():
    analysis = Analysis.model_validate(ISSUE_EXAMPLE)
    assert analysis.dump() == ISSUE_EXAMPLE
    m = analysis.metrics[0]
    assert (m.no_data, m.on_error, m.dry_run) == ("fail", "fail", False)
    assert analysis.consecutive_failures == 0 and analysis.advisory is False
    assert criteria_for(m.compare) == Criteria("increase", 10.0, 0.95, 20, 30.0)


def test_compare_defaults():
    assert criteria_for(MetricCompare()) == Criteria("increase", 10.0, 0.95, 10, 0.0)
    assert Metric(name="x").compare is None  # nothing written that was not given


@pytest.mark.parametrize("field,value", [
    ("direction", "up"), ("tolerance", -1), ("tolerance", 1001), ("confidence", 0.4), ("confidence", 1),
    ("minSamples", 0), ("minSamples", 1001), ("warmup", "soon"), ("baseline", "canary"),
])
def test_compare_bounds(field, value):
    with pytest.raises(ValidationError):
        MetricCompare.model_validate({field: value})


@pytest.mark.parametrize("doc", [{"noData": "skip"}, {"onError": "pass"}, {"dryRun": "maybe"}])
def test_policy_enums(doc):
    with pytest.raises(ValidationError):
        Metric.model_validate({"name": "x", **doc})


def test_consecutive_failures_is_not_negative():
    with pytest.raises(ValidationError):
        Analysis.model_validate({"consecutiveFailures": -1})


def test_crd_carries_the_fields_with_their_bounds():
    crd = yaml.safe_load((REPO / "crds" / "canary.dev_canaries.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    analysis = spec["properties"]["analysis"]["properties"]
    assert analysis["consecutiveFailures"]["minimum"] == 0 and analysis["advisory"]["type"] == "boolean"
    metric = analysis["metrics"]["items"]["properties"]
    assert metric["noData"]["enum"] == ["fail", "pass", "hold"]
    assert metric["onError"]["enum"] == ["fail", "hold"]
    assert metric["dryRun"]["type"] == "boolean"
    compare = metric["compare"]["properties"]
    assert set(compare) == {"baseline", "direction", "tolerance", "confidence", "minSamples", "warmup"}
    assert (compare["confidence"]["minimum"], compare["confidence"]["maximum"]) == (0.5, 0.999)
    assert compare["direction"]["enum"] == ["increase", "decrease", "either"]


def test_every_flagger_fixture_is_still_valid():
    fixtures = sorted((REPO / "tests" / "fixtures" / "flagger").rglob("*.yaml"))
    assert fixtures
    for path in fixtures:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Canary":
                Canary.model_validate(doc)
