"""`canary simulate`: whole releases decided by the real engine on a virtual clock."""

from __future__ import annotations

from pathlib import Path

import yaml

from canary import cli
from canary.models import Canary
from canary.simulate import simulate

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "podinfo" / "canary.yaml"


def podinfo(**analysis) -> Canary:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = "demo"
    doc["spec"]["analysis"].update(analysis)
    return Canary.from_obj(doc)


def weights(result) -> list[int]:
    return [line.weight for line in result.timeline]


def test_a_good_release_is_promoted_step_by_step():
    result = simulate(podinfo())
    assert result.outcome == "Succeeded"
    assert [w for w in dict.fromkeys(weights(result)) if w] == [10, 20, 30, 40, 50]
    # 5 steps of 5 s, the first as soon as the canary is ready: about 25 s of virtual time
    assert 20 <= result.seconds <= 35


def test_a_bad_release_is_rolled_back_with_its_reason():
    result = simulate(podinfo(), {"metrics": {"request-success-rate": [100, 100, 48, 45]}})
    assert result.outcome == "Failed"
    assert "request-success-rate 45" in result.last_failure
    assert result.timeline[-1].weight == 0 and max(weights(result)) == 30


def test_no_data_counts_as_a_failed_check():
    result = simulate(podinfo(), {"metrics": {"request-success-rate": None}})
    assert result.outcome == "Failed"
    assert "no values" in result.last_failure


def test_a_promotion_gate_holds_until_approved():
    canary = podinfo(webhooks=[{"name": "approve", "type": "confirm-promotion", "url": "http://gate/"}])
    result = simulate(canary, {"webhooks": {"approve": [False, False, False, True]}})
    assert result.outcome == "Succeeded"
    phases = [line.phase for line in result.timeline]
    assert "WaitingPromotion" in phases


def test_a_canary_that_never_becomes_ready_fails_at_the_deadline():
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["namespace"] = "demo"
    result = simulate(Canary.from_obj(doc), {"canaryReady": False})
    assert result.outcome == "Failed"
    assert 60 <= result.seconds <= 70  # progressDeadlineSeconds 60


def test_deterministic():
    scenario = {"metrics": {"request-success-rate": [100, 99, 98, 100]}}
    assert simulate(podinfo(), scenario).as_dict() == simulate(podinfo(), scenario).as_dict()


def test_cli_exit_codes(tmp_path, capsys):
    assert cli.main(["simulate", str(EXAMPLE)]) == 0
    assert "OUTCOME Succeeded" in capsys.readouterr().out
    scenario = tmp_path / "s.yaml"
    scenario.write_text("metrics: {request-success-rate: 10}\n")
    assert cli.main(["simulate", str(EXAMPLE), "--scenario", str(scenario), "-o", "json"]) == 0
    assert '"outcome": "Failed"' in capsys.readouterr().out
