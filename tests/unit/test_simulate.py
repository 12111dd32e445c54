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


def test_an_advisory_canary_ends_at_its_verdict():
    """analysis.advisory: the run waits for a person after the verdict; simulate reported
    "undecided after 240 min". The verdict is the outcome (--expect compares it)."""
    good = simulate(podinfo(advisory=True))
    assert good.outcome == "Succeeded" and good.seconds < 120
    assert set(weights(good)) == {0}  # nothing routed: the weight stays virtual
    bad = simulate(podinfo(advisory=True), {"metrics": {"request-success-rate": [100, 100, 48, 45]}})
    assert bad.outcome == "Failed" and bad.seconds < 120


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


# ---- simulate as a CI test -------------------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402

from canary.simulate import ScenarioError, load_scenario  # noqa: E402
from tests.unit.test_cli import FakeApi, run  # noqa: E402


def scenario_file(tmp_path, text: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return str(path)


def test_a_misspelt_metric_is_an_error_not_a_pass(tmp_path):
    with pytest.raises(ScenarioError) as e:
        load_scenario({"metrics": {"request-sucess-rate": 10}}, podinfo())
    assert e.value.problems == [("metrics.request-sucess-rate", "the Canary has no metric 'request-sucess-rate' (did "
                                 "you mean 'request-success-rate'?); its metrics: request-success-rate, "
                                 "request-duration")]
    code, out, err = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario",
                         scenario_file(tmp_path, "metrics: {request-sucess-rate: 10}\n"))
    assert code == 3 and not out and "did you mean 'request-success-rate'?" in err and "Traceback" not in err


@pytest.mark.parametrize(("text", "words"), [
    ("metric: {x: 1}\n", "metric: unknown key (did you mean 'metrics'?)"),
    ("webhooks: {approve: true}\n", "the Canary has no webhook 'approve'"),
    ("metrics: {request-duration: fast}\n", "metrics.request-duration"),
    ("maxMinutes: -1\n", "maxMinutes: Input should be greater than 0"),
    ("- 1\n- 2\n", "a scenario is a mapping"),
    ("metrics: [\n", "not valid YAML"),
])
def test_scenario_files_are_validated(tmp_path, text, words):
    code, _, err = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", scenario_file(tmp_path, text))
    assert code == 3 and words in err and "Traceback" not in err, err


def test_expect_makes_it_a_ci_test(tmp_path):
    bad = scenario_file(tmp_path, "metrics: {request-success-rate: [100, 100, 42]}\n")
    assert run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", bad, "--expect", "Failed")[0] == 0
    code, _, err = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", bad, "--expect", "Succeeded")
    assert code == 1 and err.strip() == "expected Succeeded, the outcome is Failed"
    assert run(FakeApi(), "simulate", str(EXAMPLE), "--expect", "Succeeded")[0] == 0


def test_json_checks_are_structured(tmp_path):
    bad = scenario_file(tmp_path, "metrics: {request-success-rate: [100, 100, 42]}\n")
    _, out, _ = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", bad, "-o", "json")
    data = json.loads(out)
    checks = [c for line in data["timeline"] for c in line["checks"]]
    failing = [c for c in checks if not c["ok"]]
    assert failing and failing[0]["name"] == "request-success-rate" and failing[0]["value"] == 42
    assert failing[0]["min"] == 99 and failing[0]["max"] is None and "42" in failing[0]["message"]
    assert {"name", "value", "min", "max", "ok", "message"} == set(checks[0])


def test_repeated_waiting_steps_are_merged():
    canary = podinfo(webhooks=[{"name": "approve", "type": "confirm-promotion", "url": "http://gate/"}])
    result = simulate(canary, {"webhooks": {"approve": [False] * 8 + [True]}})
    waiting = [line for line in result.timeline if line.phase == "WaitingPromotion"]
    assert result.outcome == "Succeeded" and len(waiting) <= 2, [line.as_dict() for line in waiting]
    merged = max(waiting, key=lambda line: line.count)
    assert merged.count >= 6 and merged.until is not None and merged.until > merged.seconds
    assert merged.as_dict()["count"] == merged.count


def test_text_output_ends_with_sparklines(tmp_path):
    bad = scenario_file(tmp_path, "metrics: {request-success-rate: [100, 100, 42]}\n")
    _, out, _ = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", bad)
    lines = out.splitlines()
    spark = lines[-3:]
    assert spark[0].startswith("weight ") and "max 30%" in spark[0]
    assert spark[1].startswith("request-success-rate ") and "min 99, 2 of" in spark[1] and "▁" in spark[1]
    assert spark[2].startswith("request-duration ") and "max 500" in spark[2]
    assert any(line.startswith("OUTCOME Failed") for line in lines)


def test_plot_files(tmp_path):
    pytest.importorskip("matplotlib")
    bad = scenario_file(tmp_path, "metrics: {request-success-rate: [100, 100, 42]}\n")
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".html", b"<!DOCTYPE html>")):
        target = tmp_path / f"release{suffix}"
        code, out, _ = run(FakeApi(), "simulate", str(EXAMPLE), "--scenario", bad, "--plot", str(target))
        assert code == 0 and target.read_bytes().startswith(magic) and f"plot: {target}" in out
    page = (tmp_path / "release.html").read_text()
    assert "<svg" in page and "<script" not in page and "request-success-rate" in page and "min 99" in page
    code, _, err = run(FakeApi(), "simulate", str(EXAMPLE), "--plot", str(tmp_path / "x.gif"))
    assert code == 3 and "must end in .png, .svg or .html" in err
