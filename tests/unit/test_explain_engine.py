"""`canary explain` on ledgers written by the real engine (whole releases through engine.step),
and the structured ledger entries (kind, command) that explain, the ledger summary and the
engine's own Promoted message read."""

from __future__ import annotations

import json

import pytest

from canary import ledger
from canary.models import CanaryStatus, LedgerEntry
from canary.types import Phase
from tests.unit.test_cli import FakeApi, run
from tests.unit.test_engine import SUCCESS_RATE, World, make_canary


def released(analysis: dict, value: float = 99.5) -> World:
    world = World(make_canary(analysis))
    world.metric_value = value
    world.initialize()
    world.release("rev2")
    return world


def as_object(world: World) -> dict:
    """The Canary as the API server would return it after the operator wrote the status."""
    obj = world.canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    obj["metadata"].setdefault("annotations", {})
    obj["status"] = world.status.dump()
    return obj


def explain(world: World, *args: str) -> str:
    code, out, _ = run(FakeApi(as_object(world)), "explain", "podinfo", *args)
    assert code == 0
    return out


@pytest.mark.parametrize(
    "analysis",
    [
        {"stepWeight": 20, "maxWeight": 40, "metrics": [SUCCESS_RATE]},
        {"stepWeight": 20, "maxWeight": 40, "stepWeightPromotion": 10, "metrics": [SUCCESS_RATE]},
        {"iterations": 2, "match": [{"headers": {"x": {"exact": "1"}}}], "metrics": [SUCCESS_RATE]},
        {"iterations": 2, "metrics": [SUCCESS_RATE]},
    ],
    ids=["canary", "paced-promotion", "ab", "bluegreen"],
)
def test_explain_a_successful_release_cites_the_promote_decision_and_its_checks(analysis):
    world = released(analysis)
    world.run_to(Phase.SUCCEEDED)
    out = explain(world)
    why = next(line for line in out.splitlines() if line.startswith("Why:"))
    assert "promote-step" not in why
    assert why.endswith("by operator: analysis completed; copying the canary template to the primary "
                        "(checks: request-success-rate 99.5 (min 99) ok)"), why
    # the JSON view names the same decision
    code, text, _ = run(FakeApi(as_object(world)), "explain", "podinfo", "-o", "json")
    decided = json.loads(text)["decidedBy"]
    assert decided["action"] == "promote" and decided["checks"][0]["value"] == 99.5
    # and the Promoted condition the engine wrote cites the same values
    assert world.promoted_condition().message.endswith("last checks: request-success-rate 99.5.")


def test_explain_a_promotion_in_progress_cites_the_promote_decision():
    world = released({"stepWeight": 20, "maxWeight": 40, "stepWeightPromotion": 10, "metrics": [SUCCESS_RATE]})
    world.run(lambda w: w.status.phase == Phase.PROMOTING and (w.status.ledger or [])[-1].kind == "promote-step")
    why = next(line for line in explain(world).splitlines() if line.startswith("Why:"))
    assert "analysis completed" in why and "(checks: request-success-rate 99.5 (min 99) ok)" in why


def test_explain_a_rollback_written_by_the_engine():
    world = released({"stepWeight": 20, "maxWeight": 40, "metrics": [SUCCESS_RATE]}, value=50.0)
    world.run_to(Phase.FAILED)
    why = next(line for line in explain(world).splitlines() if line.startswith("Why:"))
    assert "rolled back" in why and "by operator: check request-success-rate (value 50)" in why


def _without_kinds(status: CanaryStatus) -> list[dict]:
    """The ledger as a status written before entries had a kind."""
    out = []
    for entry in status.dump().get("ledger") or []:
        entry.pop("kind", None)
        entry.pop("command", None)
        out.append(entry)
    return out


def test_entries_written_before_kinds_existed_read_the_same():
    world = released({"stepWeight": 20, "maxWeight": 40, "stepWeightPromotion": 10, "metrics": [SUCCESS_RATE],
                      "webhooks": [{"name": "gate", "type": "confirm-promotion", "url": "http://gate/"}]})
    world.hook_ok["gate"] = False
    world.run_to(Phase.WAITING_PROMOTION)
    world.tick(60)
    world.hook_ok["gate"] = True
    world.run_to(Phase.SUCCEEDED)
    entries = world.status.ledger
    kinds = {e.kind for e in entries}
    assert {"initialize", "start", "advance", "wait", "promote", "promote-step", "complete"} <= kinds
    for new, old in zip(entries, _without_kinds(world.status)):
        loaded = LedgerEntry.model_validate(old)
        assert loaded.kind is None
        assert (ledger.kind_of(loaded), ledger.command_of(loaded)) == (new.kind, new.command)
    # a whole old status loads, and explain finds the promote decision in it
    obj = as_object(world)
    obj["status"]["ledger"] = _without_kinds(world.status)
    CanaryStatus.model_validate(obj["status"])
    _, out, _ = run(FakeApi(obj), "explain", "podinfo")
    assert "analysis completed; copying the canary template to the primary (checks: request-success-rate" in out


@pytest.mark.parametrize(
    ("action", "kind", "command"),
    [
        ("command: abort by alice", "command", "abort"),
        ("command: resume", "command", "resume"),
        ("rejected: set-weight by unknown", "rejected", "set-weight"),
        ("advance iteration 1/3", "advance", None),
        ("wait-gate", "wait", None),
        ("promote-step 0", "promote-step", None),
        ("something new", None, None),
    ],
)
def test_kind_of_old_actions(action, kind, command):
    entry = LedgerEntry.model_validate({"time": "2026-01-01T00:00:00Z", "phase": "Progressing", "weight": 0,
                                        "action": action, "actor": "operator"})
    assert (ledger.kind_of(entry), ledger.command_of(entry)) == (kind, command)
