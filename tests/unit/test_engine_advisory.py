"""Advisory mode (analysis.advisory) in the engine world: every decision computed and recorded,
the routes never leave 100/0, nothing mirrored, the primary promoted only by a person; and the
tally of advisory verdicts (advisory Canary, dryRun metrics) against the real outcome."""

from __future__ import annotations

import pytest

from canary.models import ADVISORY_CANARY
from canary.types import Alert, Phase, Promote, Routes, ScaleTarget, SetRoutes
from tests.unit.test_commands import CommandWorld
from tests.unit.test_engine import make_canary
from tests.unit.test_engine_judging import LATENCY, JudgedWorld, bounded, checks, compared

FIXED = {"name": "request-duration", "thresholdRange": {"max": 500}}


class AdvisoryWorld(CommandWorld, JudgedWorld):
    """Judged metrics and command annotations; every SetRoutes the engine asks for is kept."""

    def set_routes(self) -> list[SetRoutes]:
        return [a for a in self.actions if isinstance(a, SetRoutes)]

    def never_shifted(self) -> None:
        assert all((a.primary, a.canary, a.mirror) == (100, 0, False) for a in self.set_routes()), self.set_routes()
        assert self.routes == Routes(100, 0, False)
        assert set(self.weights) <= {0} and self.status.canary_weight == 0


def advisory_world(analysis: dict, results: dict, **spec) -> AdvisoryWorld:
    world = AdvisoryWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, "advisory": True,
                                       **analysis}, **spec), results)
    world.initialize()
    world.actions.clear()
    world.weights.clear()
    world.release("rev2")
    return world


def waiting(world: AdvisoryWorld) -> bool:
    return world.status.advisory is not None and world.status.advisory.verdict is not None


def test_a_bad_canary_would_roll_back_traffic_never_shifts_and_a_person_promotes():
    world = advisory_world({"threshold": 1, "metrics": [FIXED, LATENCY]},
                           {"request-duration": bounded(130), "latency": compared(130)})
    world.run(waiting)
    adv = world.status.advisory
    assert adv.verdict == "Rollback" and "latency" in adv.reason
    assert world.status.phase == Phase.WAITING_PROMOTION
    cond = world.status.condition("Advisory")
    assert cond.reason == "WouldRollBack" and "would roll back" in cond.message
    assert "would roll back" in world.promoted_condition().message
    assert world.events("AdvisoryVerdict") and any("would roll back" in a.message for a in world.alerts("error"))
    advise = [e for e in world.status.ledger if e.kind == "advise"]
    assert len(advise) == 1 and advise[0].weight == 0 and advise[0].advisory_weight == 20
    assert any(c.verdict == "Fail" for c in advise[0].checks)
    # the canary was scaled up and analysed; nothing else happened
    assert ScaleTarget(up=True) in world.actions and world.promoted == []
    # it waits (no promotion, no rollback) until a person decides
    for _ in range(10):
        world.tick(10)
    assert world.status.phase == Phase.WAITING_PROMOTION and world.promoted == [] and world.target_up
    world.command("promote", by="alice", reason="I know better")
    world.run_to(Phase.SUCCEEDED)
    assert world.promoted == ["rev2"]
    world.never_shifted()
    tally = world.status.advisory.tally(ADVISORY_CANARY)
    assert (tally.agreed, tally.disagreed) == (0, 1) and "promoted by alice" in tally.last
    assert "would roll back" in tally.last


def test_a_good_canary_would_promote_waits_and_abort_rolls_back():
    world = advisory_world({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run(waiting)
    assert world.status.advisory.verdict == "Promote"
    assert [e.advisory_weight for e in world.status.ledger if e.kind == "advance"] == [20, 40, 60]
    assert all("Advisory (traffic not shifted)" in e.message for e in world.events("AdvanceWeight"))
    assert world.status.condition("Advisory").reason == "WouldPromote"
    for _ in range(5):
        world.tick(10)
    assert world.promoted == [] and world.status.phase == Phase.WAITING_PROMOTION
    world.command("abort", by="bob", reason="not today")
    world.run_to(Phase.FAILED)
    world.tick(10)
    assert world.promoted == [] and not world.target_up
    world.never_shifted()
    tally = world.status.advisory.tally(ADVISORY_CANARY)
    assert (tally.agreed, tally.disagreed) == (0, 1) and "aborted by bob" in tally.last


def test_agreement_is_counted_too():
    world = advisory_world({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run(waiting)
    world.command("promote", by="alice")
    world.run_to(Phase.SUCCEEDED)
    tally = world.status.advisory.tally(ADVISORY_CANARY)
    assert (tally.agreed, tally.disagreed) == (1, 0) and tally.last is None
    # the next release starts over: a new verdict, tallied again
    world.release("rev3")
    world.run(lambda w: waiting(w) and w.status.last_applied_spec == "rev3")
    world.command("promote", by="alice", value="alice-2")
    world.run_to(Phase.SUCCEEDED)
    assert world.status.advisory.tally(ADVISORY_CANARY).agreed == 2
    assert world.promoted == ["rev2", "rev3"]


@pytest.mark.parametrize("analysis", [
    {"mirror": True},
    {"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "yes"}}}]},
    {"iterations": 3},
    {"iterations": 3, "mirror": True},
    {"stepWeightPromotion": 20},
], ids=["mirror", "ab", "bluegreen", "bluegreen-mirror", "paced-promotion"])
def test_no_strategy_shifts_or_mirrors_traffic(analysis):
    world = advisory_world({"threshold": 1, "metrics": [LATENCY], **analysis}, {"latency": compared(100)})
    world.run(waiting)
    assert world.status.advisory.verdict == "Promote"
    world.command("promote")
    world.run_to(Phase.SUCCEEDED)
    world.tick(10)
    assert world.promoted == ["rev2"]
    world.never_shifted()


def test_a_new_revision_while_waiting_starts_over():
    world = advisory_world({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(130)})
    world.run(waiting)
    assert world.status.advisory.verdict == "Rollback"
    world.release("rev3")
    world.results["latency"] = compared(100)
    world.tick(10)
    assert world.status.advisory.verdict is None and world.status.advisory.weight == 0
    world.run(waiting)
    assert world.status.advisory.verdict == "Promote" and world.status.last_applied_spec == "rev3"
    assert world.promoted == []
    world.never_shifted()


def test_the_hold_deadline_and_readiness_deadline_are_verdicts_not_rollbacks():
    world = advisory_world({"threshold": 5, "metrics": [{**LATENCY, "noData": "hold"}]},
                           {"latency": compared(100)}, progressDeadlineSeconds=60)
    world.results["latency"] = lambda w, m: bounded(None)(w, m)  # no data at all
    world.run(waiting, max_ticks=40)
    adv = world.status.advisory
    assert adv.verdict == "Rollback" and "progress deadline" in adv.reason
    assert world.status.phase == Phase.WAITING_PROMOTION and world.status.failed_checks == 0
    unready = advisory_world({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)},
                             progressDeadlineSeconds=60)
    unready.target_state = unready.target_state.WAITING
    unready.run(waiting, max_ticks=40)
    assert "not ready" in unready.status.advisory.reason and unready.status.phase == Phase.WAITING_PROMOTION


def test_turning_advisory_on_during_a_run_takes_the_traffic_off_the_canary():
    world = JudgedWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, "threshold": 1,
                                     "metrics": [LATENCY]}), {"latency": compared(100)})
    world.initialize()
    world.release("rev2")
    world.run(lambda w: w.routes.canary == 40)
    world.canary.spec.analysis.advisory = True
    world.tick(0)
    assert world.routes == Routes(100, 0, False) and world.status.canary_weight == 0
    assert world.status.advisory.weight == 40  # the analysis goes on from where it was
    world.run(lambda w: w.status.advisory.verdict is not None)
    assert world.status.advisory.verdict == "Promote" and world.promoted == []
    assert world.routes == Routes(100, 0, False)


def test_set_weight_moves_the_virtual_weight_only():
    world = advisory_world({"threshold": 1, "metrics": [LATENCY]}, {"latency": compared(100)})
    world.run(lambda w: w.status.advisory is not None and w.status.advisory.weight == 20)
    world.command("set-weight", weight=50)
    world.tick(0)
    assert world.status.advisory.weight == 50 and world.routes == Routes(100, 0, False)
    world.never_shifted()


def test_without_advisory_nothing_changes():
    world = JudgedWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, "threshold": 1,
                                     "metrics": [LATENCY]}), {"latency": compared(100)})
    world.initialize()
    world.release("rev2")
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 20, 40, 60, 0]
    assert world.status.advisory is None and world.status.condition("Advisory") is None
    assert all(e.advisory_weight is None for e in world.status.ledger)
    assert not any("Advisory" in a.message for a in world.actions if isinstance(a, Alert))


# ---- dryRun metrics: their verdicts against the real outcome --------------------------------


SHADOW = {**LATENCY, "name": "shadow", "dryRun": True}


def dry_world(results: dict) -> JudgedWorld:
    world = JudgedWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, "threshold": 1,
                                     "metrics": [FIXED, SHADOW]}), results)
    world.initialize()
    world.release("rev2")
    return world


def test_a_failing_dry_run_metric_of_a_promoted_release_is_a_disagreement():
    world = dry_world({"request-duration": bounded(100), "shadow": compared(200)})
    world.run_to(Phase.SUCCEEDED)
    tally = world.status.advisory.tally("shadow")
    assert (tally.agreed, tally.disagreed) == (0, 1)
    assert "dryRun shadow failed; promoted by the analysis" == tally.last
    assert world.status.advisory.dry_run is None  # consumed by the tally


def test_a_passing_dry_run_metric_of_a_rolled_back_release_is_a_disagreement():
    world = dry_world({"request-duration": bounded(100), "shadow": compared(100)})
    world.run(lambda w: w.routes.canary == 40)
    world.results["request-duration"] = bounded(900)
    world.run_to(Phase.FAILED)
    tally = world.status.advisory.tally("shadow")
    assert (tally.agreed, tally.disagreed) == (0, 1) and "rolled back" in tally.last
    good = dry_world({"request-duration": bounded(100), "shadow": compared(100)})
    good.run_to(Phase.SUCCEEDED)
    assert good.status.advisory.tally("shadow").agreed == 1


def test_dry_run_and_advisory_verdicts_are_tallied_side_by_side():
    world = advisory_world({"threshold": 1, "metrics": [LATENCY, SHADOW]},
                           {"latency": compared(100), "shadow": compared(200)})
    world.run(waiting)
    world.command("promote")
    world.run_to(Phase.SUCCEEDED)
    adv = world.status.advisory
    assert adv.tally(ADVISORY_CANARY).agreed == 1 and adv.tally("shadow").disagreed == 1


# ---- the score over compared checks -----------------------------------------------------------


LAT2 = {**LATENCY, "name": "latency2"}


def scored_world(analysis: dict, results: dict) -> JudgedWorld:
    world = JudgedWorld(make_canary({"interval": "10s", "stepWeight": 20, "maxWeight": 60, "threshold": 1,
                                     **analysis}), results)
    world.initialize()
    world.release("rev2")
    return world


def scores(world: JudgedWorld) -> list:
    return [e.score for e in world.status.ledger or [] if e.score is not None]


def test_several_compared_checks_get_a_score_in_the_ledger_that_does_not_decide_by_default():
    world = scored_world({"metrics": [LATENCY, LAT2]},
                         {"latency": compared(130), "latency2": compared(100)})
    world.run_to(Phase.FAILED)  # each compared check decides alone: latency failed
    s = scores(world)[-1]
    assert s.classification == "Marginal" and s.value == 50 and s.deciding is None and "latency" in s.reason
    one = scored_world({"metrics": [LATENCY]}, {"latency": compared(100)})
    one.run_to(Phase.SUCCEEDED)
    assert scores(one) == []  # a single compared check: nothing to combine


def test_analysis_score_lets_the_weighted_score_decide():
    metrics = [LATENCY, LAT2]
    world = scored_world({"metrics": metrics, "score": {"pass": 75, "marginal": 50, "weights": {"latency2": 3}}},
                         {"latency": compared(130), "latency2": compared(100)})
    world.run_to(Phase.SUCCEEDED)  # 75: Pass, though latency failed alone
    assert world.promoted == ["rev2"] and all(s.deciding for s in scores(world))
    assert any(c.verdict == "Fail" and "(scored)" in (c.message or "") for c in checks(world))
    failing = scored_world({"metrics": [LATENCY, LAT2], "score": {"pass": 75, "marginal": 40}},
                           {"latency": compared(130), "latency2": compared(130)})
    failing.run_to(Phase.FAILED)
    assert failing.status.last_failure.check == "score" and "score 0" in failing.status.last_failure.message


def test_a_marginal_score_holds_and_ends_at_the_progress_deadline():
    world = scored_world({"metrics": [LATENCY, LAT2], "score": {"pass": 75, "marginal": 50}},
                         {"latency": compared(130), "latency2": compared(100)})
    world.canary.spec.progress_deadline_seconds = 60
    for _ in range(4):
        world.tick(10)
    assert world.status.failed_checks == 0 and world.status.held_since is not None
    assert world.events("Hold") and "Marginal" in world.events("Hold")[-1].message
    world.run_to(Phase.FAILED, max_ticks=20)
    assert "the score held the analysis" in world.status.last_failure.message


def test_a_critical_check_fails_the_score():
    world = scored_world({"metrics": [LATENCY, LAT2], "score": {"critical": ["latency"], "weights": {"latency2": 9}}},
                         {"latency": compared(130), "latency2": compared(100)})
    world.run_to(Phase.FAILED)
    assert "critical check failed: latency" in world.status.last_failure.message


def test_the_score_may_only_name_compared_metrics():
    from pydantic import ValidationError

    from canary.models import Analysis

    with pytest.raises(ValidationError, match="not a compared metric"):
        Analysis.model_validate({"metrics": [FIXED], "score": {"weights": {"request-duration": 2}}})
    with pytest.raises(ValidationError, match="above pass"):
        Analysis.model_validate({"score": {"pass": 40, "marginal": 60}})


# ---- what people see ------------------------------------------------------------------------


def _obj(world) -> dict:
    return {"metadata": {"name": "podinfo", "namespace": "test"}, "spec": world.canary.spec.dump(),
            "status": world.status.dump()}


def test_explain_shows_the_verdict_the_virtual_weight_the_tally_and_the_score():
    from canary.cli.explain import explain_json, explain_text
    from canary.cli.views import View, note

    world = advisory_world({"threshold": 1, "metrics": [LATENCY, LAT2]},
                           {"latency": compared(130), "latency2": compared(130)})
    world.run(waiting)
    text = explain_text(_obj(world))
    assert "Advisory: the analysis would roll back at" in text and "waiting for a person" in text
    assert "0 (advisory 20)" in text
    assert "score 0 Fail: failed: latency, latency2" in text
    assert note(View.of(_obj(world))).startswith("advisory: would roll back")
    world.command("promote", by="alice")
    world.run_to(Phase.SUCCEEDED)
    text = explain_text(_obj(world))
    assert "then promoted by alice" in text
    assert "Advisory tally: the advisory verdict agreed with 0 and disagreed with 1 real outcomes" in text
    assert explain_json(_obj(world))["advisory"]["tallies"][0]["disagreed"] == 1


def test_a_rollback_webhook_while_waiting_rolls_back_for_real_and_the_condition_says_how_it_ended():
    hook = {"name": "stop", "type": "rollback", "url": "http://hooks.test/stop"}
    world = advisory_world({"threshold": 1, "metrics": [LATENCY], "webhooks": [hook]}, {"latency": compared(100)})
    world.run(waiting)
    assert world.status.condition("Advisory").status == "True"
    world.hook_ok["stop"] = True
    world.run_to(Phase.FAILED)
    cond = world.status.condition("Advisory")
    assert cond.status == "False" and cond.reason == "Decided" and "would promote; rolled back" in cond.message
    assert world.status.advisory.tally(ADVISORY_CANARY).disagreed == 1 and world.promoted == []
    world.never_shifted()


def test_hostile_text_in_a_check_message_is_cleaned_in_the_verdict():
    def hostile(world, m):
        from canary.types import MetricResult
        return MetricResult(m.name, "q", None, ok=False, error=True, message="boom\x1b[2J\nrm -rf /" + "x" * 2000)
    world = advisory_world({"threshold": 1, "metrics": [FIXED]}, {"request-duration": hostile})
    world.run(waiting)
    adv = world.status.advisory
    assert "\x1b" not in adv.reason and "\n" not in adv.reason and len(adv.reason) <= 512
    assert len(world.status.condition("Advisory").message) <= 1024


def test_a_score_with_half_its_weight_unjudged_is_inconclusive_and_holds():
    from canary.engine.judging import assess
    from tests.unit.test_engine_judging import nodata

    world = scored_world({"metrics": [{**LATENCY, "noData": "pass"}, LAT2], "score": {}},
                         {"latency": nodata, "latency2": compared(100)})
    world.tick(0)
    specs = world.canary.spec.analysis.metrics
    results = (nodata(world, specs[0]), compared(100)(world, specs[1]))
    a = assess(specs, results, None, 20, world.canary.spec.analysis.score)
    assert a.failed is None and a.hold is None  # noData: pass, and the other check passed
    assert a.score.classification == "Inconclusive" and a.score_state() == "hold"
    for _ in range(4):
        world.tick(10)
    assert world.status.failed_checks == 0 and world.status.held_since is not None
    assert world.routes.canary <= 20


# ---- random histories -------------------------------------------------------------------------


def test_random_advisory_histories_never_shift_traffic_and_promote_only_what_a_person_promoted():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hst

    from canary.models import Canary
    from canary.types import Promote
    from tests.unit.test_engine_properties import analyses, apply_command_op, command_ops

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(analysis=analyses(), deadline=hst.sampled_from([30, 120, 600]),
           script=hst.lists(hst.tuples(command_ops, hst.integers(0, 3)), max_size=40))
    def run(analysis, deadline, script):
        analysis = {**analysis, "advisory": True}
        extra = {"progressDeadlineSeconds": deadline}
        world = CommandWorld(make_canary(analysis, **extra), revision="r1")
        world.initialize()
        world.release("r2")
        counter = [0]
        by_person: set[str] = set()

        def tick(advance: float) -> None:
            before = world.status
            decision = world.tick(advance)  # World checks canaryWeight == the routed weight
            after = decision.status
            last = after.last_command
            if last is not None and last != before.last_command and last.name == "promote" \
                    and last.result == "Applied":
                by_person.add(after.last_applied_spec)
            for a in decision.actions:
                if isinstance(a, SetRoutes):
                    assert (a.primary, a.canary, a.mirror) == (100, 0, False), a
                if isinstance(a, Promote):
                    # a person's promote, or the copy of a failed initialization retried
                    assert a.revision in by_person or after.phase == Phase.INITIALIZING, (a, after.phase)
            assert world.routes == Routes(100, 0, False) and after.canary_weight == 0
            assert isinstance(world.canary, Canary)
            if after.phase == Phase.PROMOTING and before.phase != Phase.PROMOTING:
                assert after.last_command is not None and after.last_command.name == "promote"

        tick(0)
        for op, ticks in script:
            tick(apply_command_op(world, op, analysis, extra, counter))
            for _ in range(ticks):
                tick(world.decisions[-1].wake_after)

    run()
