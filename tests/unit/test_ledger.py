"""The decision ledger (status.ledger): what the engine records, and how it stays small."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import yaml

from canary import crd, engine, ledger
from canary.models import LEDGER_LIMIT, CanaryStatus, LedgerCheck, LedgerEntry
from canary.types import MetricResult, Phase, Ready, WebhookResult
from tests.unit.test_engine import SUCCESS_RATE, T0, World, make_canary

DURATION = {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"}
LONG_QUERY = (
    "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
    'reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo"'
    "}[1m])) by (le))   \n   " + " " * 50
)


class QueryWorld(World):
    """Metrics with realistic (long, multi-line) queries."""

    def run_checks(self, obs, check_plan):
        obs = super().run_checks(obs, check_plan)
        if obs.metrics is None:
            return obs
        ranges = {m.name: m.threshold_range for m in self.canary.spec.analysis.metrics}
        metrics = tuple(
            dataclasses.replace(m, query=f"{m.name}: {LONG_QUERY}", min=ranges[m.name].min, max=ranges[m.name].max)
            for m in obs.metrics
        )
        return dataclasses.replace(obs, metrics=metrics)


def entry(action: str, t: int, checks=None, **kw) -> LedgerEntry:
    return LedgerEntry(time=T0 + timedelta(seconds=t), phase=Phase.PROGRESSING, weight=kw.pop("weight", 10),
                       action=action, actor=kw.pop("actor", "operator"), checks=checks, **kw)


def check(name: str, query: str | None, value: float = 1.0) -> LedgerCheck:
    return LedgerCheck(name=name, query=query, value=value, ok=True)


# ---- pure helpers ------------------------------------------------------------------------------


def test_queries_are_stored_once_and_resolved():
    st = CanaryStatus()
    ledger.append(st, [entry("advance 10", 0, [check("a", "qa"), check("b", "qb")])])
    ledger.append(st, [entry("advance 20", 1, [check("a", "qa"), check("b", "qb2")])])
    ledger.append(st, [entry("advance 30", 2, [check("a", "qa")])])
    stored = [[c.query for c in e.checks] for e in st.ledger]
    assert stored == [["qa", "qb"], [None, "qb2"], [None]]
    assert ledger.queries(st.ledger) == [{"a": "qa", "b": "qb"}, {"a": "qa", "b": "qb2"}, {"a": "qa"}]


def test_waits_are_merged_with_the_latest_values():
    st = CanaryStatus()
    for t in range(5):
        ledger.append(st, [entry("wait-gate", t, [check("a", "qa", value=t)], message="gate closed")])
    assert len(st.ledger) == 1
    only = st.ledger[0]
    assert only.count == 5 and only.time == T0 and only.last_time == T0 + timedelta(seconds=4)
    assert only.checks[0].value == 4 and only.checks[0].query == "qa"
    # a different decision is a new entry; a later wait is not merged across it
    ledger.append(st, [entry("advance 20", 9), entry("wait-gate", 10, message="gate closed")])
    assert [e.action for e in st.ledger] == ["wait-gate", "advance 20", "wait-gate"]
    # advances are never merged
    ledger.append(st, [entry("advance 20", 11)])
    assert len(st.ledger) == 4


def test_ledger_is_bounded_and_summarized():
    st = CanaryStatus()
    total = 130
    for t in range(total):
        action = ["advance 10", "halt", "command: pause by a", "rollback", "promote", "start"][t % 6]
        ledger.append(st, [entry(action, t, [check("a", "qa" if t < 3 else "qa-new" if t < 60 else "qa-new")])])
    assert len(st.ledger) == LEDGER_LIMIT
    summary = st.ledger_summary
    assert summary.entries == total - LEDGER_LIMIT
    assert summary.first_time == T0
    assert summary.last_time == T0 + timedelta(seconds=total - LEDGER_LIMIT - 1)
    dropped = [["advance 10", "halt", "command: pause by a", "rollback", "promote", "start"][t % 6]
               for t in range(total - LEDGER_LIMIT)]
    assert summary.advances == dropped.count("advance 10")
    assert summary.halts == dropped.count("halt")
    assert summary.commands == dropped.count("command: pause by a")
    assert summary.rollbacks == dropped.count("rollback")
    assert summary.promotions == dropped.count("promote")
    # the first remaining mention of a check carries its query again
    assert st.ledger[0].checks[0].query == "qa-new"
    assert all(e.checks[0].query is None for e in st.ledger[1:])
    assert ledger.queries(st.ledger)[-1] == {"a": "qa-new"}
    # the status still validates against the model bound
    CanaryStatus.model_validate(st.dump())


def test_texts_are_clipped_and_non_finite_values_dropped():
    metrics = [MetricResult("m", "x" * 5000, float("inf"), min=1.0, ok=False, message="y" * 1000)]
    (c,) = ledger.checks_of(metrics)
    assert len(c.query) == 1000 and c.value is None and len(c.message) == 256
    assert ledger.checks_of(None) is None
    (h,) = ledger.webhooks_of([WebhookResult("h", "", False, 500, "boom")])
    assert (h.type, h.status_code, h.message) == ("rollout", 500, "boom")


def test_crd_bounds_the_ledger():
    text = (crd.DEFAULT_DIR / "canary.dev_canaries.yaml").read_text()
    schema = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["status"]["properties"]["ledger"]
    assert node["type"] == "array" and node["maxItems"] == LEDGER_LIMIT
    item = node["items"]["properties"]
    assert item["checks"]["maxItems"] == 20 and item["checks"]["items"]["properties"]["query"]["maxLength"] == 1000
    assert item["message"]["maxLength"] == 512
    assert crd.structural_errors(schema) == []


# ---- what the engine records ---------------------------------------------------------------------


def test_a_release_is_recorded_step_by_step():
    world = QueryWorld(make_canary({"stepWeight": 25, "maxWeight": 50, "metrics": [SUCCESS_RATE, DURATION]}))
    world.initialize()
    world.release("rev2")
    world.run_to(Phase.SUCCEEDED)
    actions = [e.action for e in world.status.ledger]
    assert actions == ["initialize", "start", "advance 25", "advance 50", "promote", "promote-step 0", "complete"]
    by_action = {e.action: e for e in world.status.ledger}
    step = by_action["advance 50"]
    assert step.phase == Phase.PROGRESSING and step.weight == 50 and step.actor == "operator"
    checks = {c.name: c for c in step.checks}
    assert checks["request-success-rate"].value == 100.0 and checks["request-success-rate"].min == 99
    assert checks["request-success-rate"].ok is True
    assert checks["request-success-rate"].query.startswith("request-success-rate: histogram_quantile")
    assert "  " not in checks["request-success-rate"].query  # whitespace collapsed
    assert checks["request-duration"].max == 500
    assert all(c.query is None for c in by_action["promote"].checks)  # same queries as before
    assert by_action["complete"].phase == Phase.SUCCEEDED and by_action["complete"].weight == 0


def test_a_rollback_names_the_deciding_check_and_value():
    world = World(make_canary({"stepWeight": 25, "maxWeight": 50, "threshold": 2, "metrics": [SUCCESS_RATE]}))
    world.initialize()
    world.release("rev2")
    world.metric_value = 48.2
    world.run_to(Phase.FAILED)
    halt, rollback = world.status.ledger[-2:]
    assert halt.action == "halt" and "request-success-rate 48.20 < 99" in halt.message and "1/2" in halt.message
    assert rollback.action == "rollback" and rollback.phase == Phase.FAILED and rollback.weight == 0
    assert "request-success-rate 48.20 < 99" in rollback.message
    assert rollback.checks[0].ok is False and rollback.checks[0].value == 48.2
    cond = world.status.condition("Promoted")
    assert "request-success-rate 48.20 < 99" in cond.message


def test_gates_and_webhook_rollbacks_name_the_webhook():
    hooks = [{"name": "approve", "type": "confirm-promotion", "url": "http://x"},
             {"name": "rb", "type": "rollback", "url": "http://x"}]
    world = World(make_canary({"stepWeight": 50, "webhooks": hooks}))
    world.initialize()
    world.release("rev2")
    world.hook_ok["approve"] = False
    world.run_to(Phase.WAITING_PROMOTION)
    for _ in range(4):
        world.tick(60)
    wait = world.status.ledger[-1]
    assert wait.action == "wait-gate" and wait.actor == "webhook:approve" and wait.count == 5
    assert "approve" in wait.message and "403" in wait.message
    assert [h.name for h in wait.webhooks] == ["approve"]  # rollback polls that did nothing are left out
    world.hook_ok["rb"] = True
    world.tick(1)
    last = world.status.ledger[-1]
    assert (last.action, last.actor) == ("rollback", "webhook:rb")
    assert [(h.name, h.ok) for h in last.webhooks] == [("rb", True)]


def test_idle_ticks_change_nothing():
    world = World(make_canary({"stepWeight": 10, "metrics": [SUCCESS_RATE]}))
    world.initialize()
    world.release("rev2")
    world.run(lambda w: w.status.canary_weight == 20)
    status = world.status
    for _ in range(5):  # watch events between two intervals
        world.tick(5)
        assert world.status == status
    world.target_state = Ready.WAITING
    world.tick(5)
    waiting = world.status
    for _ in range(3):
        world.tick(5)
        assert world.status == waiting


def test_ledger_stays_bounded_and_small_over_a_long_release():
    world = QueryWorld(make_canary({"stepWeight": 1, "maxWeight": 100, "threshold": 1000,
                                    "metrics": [SUCCESS_RATE, DURATION]}))
    world.initialize()
    world.release("rev2")
    flip = iter(range(10_000))
    world.run(lambda w: (next(flip) % 7 == 0 and setattr(w, "metric_value", 98.0 if w.metric_value == 100.0 else 100.0))
              or w.status.phase == Phase.SUCCEEDED, max_ticks=2000)
    st = world.status
    assert len(st.ledger) == LEDGER_LIMIT
    assert st.ledger_summary.advances > 40 and st.ledger_summary.halts > 0
    assert st.ledger_summary.entries + len(st.ledger) >= 100
    size = len(json.dumps(st.to_patch()))
    assert size < 24_000, size
    # every stored check still has its query available
    assert all(set(q) == {"request-success-rate", "request-duration"}
               for q, e in zip(ledger.queries(st.ledger), st.ledger) if e.checks)


def test_failed_promotion_and_deadline_are_recorded():
    world = World(make_canary({"stepWeight": 50}, progressDeadlineSeconds=60))
    world.initialize()
    world.release("rev2")
    world.target_state = Ready.WAITING
    world.run_to(Phase.FAILED)
    last = world.status.ledger[-1]
    assert last.action == "rollback" and "progress deadline" in last.message
    assert engine.PROGRESS_DEADLINE_CHECK == world.status.last_failure.check


def test_the_succeeded_condition_names_the_deciding_checks_or_user():
    world = World(make_canary({"stepWeight": 50, "metrics": [SUCCESS_RATE]}))
    world.initialize()
    world.release("rev2")
    world.run_to(Phase.SUCCEEDED)
    cond = world.status.condition("Promoted")
    assert cond.message == ("Canary analysis completed successfully, promotion finished; "
                            "last checks: request-success-rate 100.")
