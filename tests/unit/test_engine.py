"""Whole releases driven tick by tick through engine.plan/step in canary.world.World (the
world `canary simulate` uses too): it applies the engine's actions, answers the checks the
plan asks for, and a virtual clock advances by the engine's wake_after.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from canary import engine
from canary.models import Canary
from canary.types import (
    CallWebhooks,
    Event,
    Initialize,
    Phase,
    Promote,
    Ready,
    Routes,
    ScaleTarget,
    SetRoutes,
)
from canary.world import T0, World

__all__ = ["SUCCESS_RATE", "T0", "World", "make_canary", "released_world"]


def make_canary(analysis: dict[str, Any] | None = None, **spec: Any) -> Canary:
    body: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            **spec,
        },
    }
    if analysis is not None:
        body["spec"]["analysis"] = {"interval": "1m", "threshold": 2, **analysis}
    return Canary.model_validate(body)


SUCCESS_RATE = {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}


def released_world(analysis: dict[str, Any] | None = None, **spec: Any) -> World:
    world = World(make_canary(analysis, **spec))
    world.initialize()
    world.actions.clear()
    world.weights.clear()
    world.phases.clear()
    world.release("rev2")
    return world


# ---- initialization ------------------------------------------------------------------------


def test_initialization():
    world = World(make_canary({"stepWeight": 10}))
    first = world.tick()
    assert world.status.phase == Phase.INITIALIZING
    # the primary is created, but no route sends traffic to it before it is ready (issue 9.4)
    assert first.actions[0] == Initialize(routes=False)
    assert world.routes is None
    assert world.promoted_condition().status == "Unknown"
    second = world.tick(first.wake_after)
    # the routes are asked for, but Initialized is said only once they are seen: the status
    # is written before the effects, and Initialized must mean the primary serves
    assert world.status.phase == Phase.INITIALIZING
    assert Initialize(routes=True) in second.actions
    assert world.routes == Routes(100, 0, False)
    assert world.target_up is True
    world.tick(second.wake_after)
    st = world.status
    assert st.phase == Phase.INITIALIZED
    assert st.last_applied_spec == st.last_promoted_spec == "rev1"
    assert world.routes == Routes(100, 0, False)
    assert world.target_up is False
    cond = world.promoted_condition()
    assert (cond.status, cond.reason, cond.message) == ("True", "Initialized", "Deployment initialization completed.")
    assert world.alerts("info")[0].message == "New Deployment detected, initialization completed."
    # steady state: nothing happens
    d = world.tick(3600)
    assert d.actions == [] and world.status.phase == Phase.INITIALIZED


def test_initialization_waits_for_primary_then_fails_after_deadline():
    world = World(make_canary({"stepWeight": 10}, progressDeadlineSeconds=120))
    world.primary_state = Ready.WAITING
    world.tick()
    world.tick(30)
    assert world.status.phase == Phase.INITIALIZING
    assert world.status.waiting_since is not None
    world.run_to(Phase.FAILED)
    assert (world.now - T0).total_seconds() >= 120
    assert world.status.last_failure.check == engine.PRIMARY_READINESS_CHECK
    assert world.alerts("error")
    # no routing object was made for a primary that never became ready: the target still
    # serves through whatever routed to it before
    assert world.routes is None
    assert world.target_up
    # a new target revision re-runs the initialization
    world.primary_state = Ready.READY
    world.release("rev2")
    world.run_to(Phase.INITIALIZED)
    assert world.status.last_promoted_spec == "rev2"
    assert world.routes == Routes(100, 0, False)


def test_initialization_with_skip_analysis_still_waits_for_the_primary():
    world = World(make_canary(None, skipAnalysis=True))
    world.primary_state = Ready.WAITING
    world.tick()
    world.tick(10)
    assert world.status.phase == Phase.INITIALIZING
    assert not any(isinstance(a, SetRoutes) for a in world.actions)


# ---- canary strategy -------------------------------------------------------------------------


def test_promotion_step_weight_10_max_50():
    world = released_world(
        {
            "stepWeight": 10,
            "maxWeight": 50,
            "metrics": [SUCCESS_RATE],
            "webhooks": [{"name": "done", "url": "http://x", "type": "post-rollout"}],
        }
    )
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 10, 20, 30, 40, 50, 0]
    phases = [p for i, p in enumerate(world.phases) if i == 0 or world.phases[i - 1] != p]
    assert phases == [
        Phase.PROGRESSING,
        Phase.PROMOTING,
        Phase.FINALISING,
        Phase.SUCCEEDED,
    ]
    st = world.status
    assert st.last_promoted_spec == st.last_applied_spec == "rev2"
    assert world.promoted == ["rev2"]
    assert world.routes == Routes(100, 0, False)
    assert not world.target_up
    assert st.failed_checks == 0
    assert CallWebhooks("post-rollout", "Succeeded") in world.actions
    assert world.promoted_condition().status == "True"
    assert "Canary analysis completed successfully, promotion finished." in [a.message for a in world.alerts("info")]
    advance = [e.message for e in world.events("AdvanceWeight")]
    assert advance[0] == "Advance podinfo.test canary weight 10"


def test_weight_steps_are_one_interval_apart():
    world = released_world({"stepWeight": 10, "maxWeight": 30, "metrics": [SUCCESS_RATE]})
    world.run_to(Phase.SUCCEEDED)
    times = [d.status.last_step_time for d in world.decisions if d.status.phase == Phase.PROGRESSING]
    steps = sorted({t for t in times if t is not None})
    gaps = [(b - a).total_seconds() for a, b in zip(steps, steps[1:])]
    assert gaps and all(g >= 60 for g in gaps)


def test_step_weights_do_not_overshoot():
    world = released_world({"stepWeights": [1, 5, 20, 50], "maxWeight": 100, "metrics": [SUCCESS_RATE]})
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 1, 5, 20, 50, 0]


def test_max_weight_is_never_overshot():
    world = released_world({"stepWeight": 20, "maxWeight": 50})
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 20, 40, 50, 0]


def test_next_weight():
    canary = make_canary({"stepWeight": 20, "maxWeight": 50})
    assert [engine.next_weight(canary.spec.analysis, w) for w in (0, 20, 40)] == [20, 40, 50]
    canary = make_canary({"stepWeights": [1, 5, 50]})
    assert [engine.next_weight(canary.spec.analysis, w) for w in (0, 1, 3, 5)] == [1, 5, 5, 50]


def test_analysis_step_not_taken_twice_within_an_interval():
    world = released_world({"stepWeight": 10, "metrics": [SUCCESS_RATE]})
    world.tick()  # scale up
    world.tick()  # first step (pre-rollout) -> weight 10
    assert world.routes.canary == 10
    for _ in range(20):
        world.tick(2)  # 40s in total, below the 60s interval
    assert world.routes.canary == 10
    assert all(not p.metrics for p in world.plans[-20:])
    world.tick(20)
    assert world.routes.canary == 20


def test_wake_after_is_the_time_to_the_next_step():
    world = released_world({"stepWeight": 10})
    world.tick()
    world.tick()
    d = world.tick(15)
    assert d.wake_after == pytest.approx(45)


def test_mirror_step_then_weights():
    world = released_world({"stepWeight": 25, "maxWeight": 50, "mirror": True, "mirrorWeight": 50})
    world.run_to(Phase.SUCCEEDED)
    routes = [a for a in world.actions if isinstance(a, SetRoutes)]
    assert routes[:3] == [SetRoutes(100, 0, True), SetRoutes(75, 25), SetRoutes(50, 50)]


# ---- failures --------------------------------------------------------------------------------


def test_metric_failure_rolls_back_at_threshold_and_keeps_the_reason():
    world = released_world(
        {
            "stepWeight": 10,
            "maxWeight": 50,
            "threshold": 2,
            "metrics": [SUCCESS_RATE],
            "webhooks": [{"name": "done", "url": "http://x", "type": "post-rollout"}],
        }
    )
    world.run(lambda w: w.routes.canary == 20)
    world.metric_value = 48.2
    world.run_to(Phase.FAILED)
    st = world.status
    assert st.failed_checks == 2
    assert st.last_failure.check == "request-success-rate"
    assert st.last_failure.value == pytest.approx(48.2)
    assert "request-success-rate 48.20 < 99" in st.last_failure.message
    assert world.routes == Routes(100, 0, False)
    assert st.canary_weight == 0
    assert not world.target_up
    cond = world.promoted_condition()
    assert cond.status == "False" and cond.reason == "Failed"
    assert "request-success-rate 48.20 < 99" in cond.message
    assert "Halt podinfo.test advancement: request-success-rate 48.20 < 99" in [e.message for e in world.events("Halt")]
    assert world.alerts("error")
    assert CallWebhooks("post-rollout", "Failed") in world.actions
    assert world.promoted == []
    # a failed revision is not retried by itself
    d = world.tick(600)
    assert d.actions == [] and world.status.phase == Phase.FAILED


def test_no_data_counts_as_a_failure():
    world = released_world({"stepWeight": 50, "threshold": 1, "metrics": [SUCCESS_RATE]})
    world.run(lambda w: w.routes.canary == 50)
    world.metric_value = None
    world.run_to(Phase.FAILED)
    assert world.status.last_failure.value is None
    assert "no values found" in world.status.last_failure.message


def test_pre_rollout_failure_is_counted():
    world = released_world(
        {"stepWeight": 50, "threshold": 3, "webhooks": [{"name": "smoke", "url": "http://x", "type": "pre-rollout"}]}
    )
    world.hook_ok["smoke"] = False
    world.tick()  # scale up
    world.tick()  # pre-rollout fails
    assert world.status.failed_checks == 1
    assert world.status.last_failure.check == "smoke"
    assert world.routes.canary == 0
    world.hook_ok["smoke"] = True
    world.run_to(Phase.SUCCEEDED)
    assert world.status.failed_checks == 1


def test_pre_rollout_failures_reach_the_threshold():
    world = released_world(
        {"stepWeight": 50, "threshold": 2, "webhooks": [{"name": "smoke", "url": "http://x", "type": "pre-rollout"}]}
    )
    world.hook_ok["smoke"] = False
    world.run_to(Phase.FAILED)
    assert world.status.failed_checks == 2
    assert world.status.last_failure.check == "smoke"


def test_rollout_webhook_failure_is_counted():
    world = released_world(
        {"stepWeight": 20, "maxWeight": 40, "threshold": 2, "webhooks": [{"name": "load", "url": "http://x"}]}
    )
    world.run(lambda w: w.routes.canary == 20)
    world.hook_ok["load"] = False
    world.tick(60)
    assert world.status.failed_checks == 1
    assert world.routes.canary == 20
    world.hook_ok["load"] = True
    world.run_to(Phase.SUCCEEDED)
    assert world.status.failed_checks == 1


def test_one_failure_per_tick():
    world = released_world(
        {
            "stepWeight": 20,
            "threshold": 5,
            "metrics": [SUCCESS_RATE, {"name": "request-duration", "thresholdRange": {"max": 500}}],
            "webhooks": [{"name": "load", "url": "http://x"}],
        }
    )
    world.run(lambda w: w.routes.canary == 20)
    world.hook_ok["load"] = False
    world.metric_value = 1.0
    world.tick(60)
    assert world.status.failed_checks == 1


def test_rollback_webhook():
    world = released_world(
        {"stepWeight": 10, "webhooks": [{"name": "abort", "url": "http://x", "type": "rollback"}]}
    )
    world.run(lambda w: w.routes.canary == 20)
    world.hook_ok["abort"] = True
    world.tick(1)
    st = world.status
    assert st.phase == Phase.FAILED
    assert st.last_failure.check == "abort"
    assert world.routes == Routes(100, 0, False)
    assert "abort" in world.promoted_condition().message
    assert world.alerts("error")


def test_canary_never_ready_fails_after_the_progress_deadline():
    world = released_world({"stepWeight": 10}, progressDeadlineSeconds=300)
    world.target_state = Ready.WAITING
    released = world.now
    world.run_to(Phase.FAILED)
    waited = (world.now - released).total_seconds()
    assert 300 <= waited <= 300 + 60
    st = world.status
    assert st.last_failure.check == engine.PROGRESS_DEADLINE_CHECK
    assert world.routes == Routes(100, 0, False)
    assert not world.target_up
    assert [a for a in world.alerts("error") if "Progress deadline exceeded" in a.message]
    # the wait started with the scale-up; no extra "not ready" event for the expected wait
    assert world.events("CanaryNotReady") == []


def test_canary_becoming_unready_mid_run_is_reported_once():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 20)
    world.target_state = Ready.WAITING
    for _ in range(3):
        world.tick(30)
    assert len(world.events("CanaryNotReady")) == 1
    assert world.routes.canary == 20
    world.target_state = Ready.READY
    world.run_to(Phase.SUCCEEDED)


def test_canary_hard_failure_rolls_back_at_once():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    world.target_state = Ready.FAILED
    world.tick(1)
    assert world.status.phase == Phase.FAILED
    assert world.routes == Routes(100, 0, False)


def test_primary_not_ready_during_promotion_fails_and_keeps_the_canary_serving():
    world = released_world({"stepWeight": 50}, progressDeadlineSeconds=120)
    world.run_to(Phase.PROMOTING)
    world.primary_state = Ready.WAITING
    world.run_to(Phase.FAILED)
    st = world.status
    assert st.last_failure.check == engine.PRIMARY_READINESS_CHECK
    assert world.routes == Routes(0, 100, False)
    assert world.target_up
    assert st.last_promoted_spec == "rev1"
    assert [a for a in world.alerts("error") if a.message.startswith("Promotion failed, primary not ready")]
    # a fixed revision is promoted forward (traffic is already on the canary)
    world.primary_state = Ready.READY
    world.release("rev3")
    world.run_to(Phase.SUCCEEDED)
    assert world.status.last_promoted_spec == "rev3"
    assert world.routes == Routes(100, 0, False)


def test_primary_hard_failure_during_finalising():
    world = released_world({"stepWeight": 50})
    world.run_to(Phase.FINALISING)
    world.primary_state = Ready.FAILED
    world.tick()
    assert world.status.phase == Phase.FAILED
    assert world.routes == Routes(0, 100, False)


def test_step_weight_promotion_steps_back():
    world = released_world({"stepWeight": 25, "maxWeight": 50, "stepWeightPromotion": 20})
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 25, 50, 30, 10, 0]
    shifts = [e.message for e in world.events("AdvancePrimaryWeight")]
    assert shifts == [
        "Advance podinfo.test primary weight 70",
        "Advance podinfo.test primary weight 90",
        "Advance podinfo.test primary weight 100",
    ]


# ---- gates -----------------------------------------------------------------------------------


def test_confirm_rollout_waits_then_proceeds():
    world = released_world(
        {"stepWeight": 50, "webhooks": [{"name": "gate", "url": "http://x", "type": "confirm-rollout"}]}
    )
    world.hook_ok["gate"] = False
    world.tick()
    assert world.status.phase == Phase.WAITING
    assert world.promoted_condition().message == "Waiting for approval."
    assert [a.message for a in world.alerts("warn")] == ["Canary is waiting for approval."]
    for _ in range(5):
        world.tick(60)
    assert world.status.phase == Phase.WAITING
    assert len(world.alerts("warn")) == 1  # alerted once
    assert world.target_up is False
    # polled at most once per interval
    calls = len(world.called_hooks)
    world.tick(1)
    assert len(world.called_hooks) == calls
    world.hook_ok["gate"] = True
    world.tick(60)
    assert world.status.phase == Phase.PROGRESSING
    assert world.target_up
    world.run_to(Phase.SUCCEEDED)


def test_confirm_rollout_muted_alert():
    world = released_world(
        {"stepWeight": 50, "webhooks": [{"name": "gate", "url": "http://x", "type": "confirm-rollout", "muteAlert": True}]}
    )
    world.hook_ok["gate"] = False
    world.tick()
    assert world.status.phase == Phase.WAITING
    assert world.alerts("warn") == []


def test_confirm_promotion_waits_with_weight_kept_at_max():
    world = released_world(
        {
            "stepWeight": 25,
            "maxWeight": 50,
            "metrics": [SUCCESS_RATE],
            "webhooks": [{"name": "approve", "url": "http://x", "type": "confirm-promotion"}],
        }
    )
    world.hook_ok["approve"] = False
    world.run_to(Phase.WAITING_PROMOTION)
    assert world.status.canary_weight == 50 == world.routes.canary
    # analysis keeps running while waiting
    world.metric_value = 10
    world.tick(60)
    assert world.status.failed_checks == 1
    world.metric_value = 100
    for _ in range(3):
        world.tick(60)
    assert world.status.phase == Phase.WAITING_PROMOTION
    assert world.status.canary_weight == 50
    world.hook_ok["approve"] = True
    world.tick(60)
    assert world.status.phase == Phase.PROMOTING
    world.run_to(Phase.SUCCEEDED)


def test_confirm_traffic_increase_halts_without_counting():
    world = released_world(
        {
            "stepWeight": 20,
            "maxWeight": 40,
            "threshold": 1,
            "webhooks": [{"name": "more", "url": "http://x", "type": "confirm-traffic-increase"}],
        }
    )
    world.run(lambda w: w.routes.canary == 20)
    world.hook_ok["more"] = False
    for _ in range(4):
        world.tick(60)
    assert world.routes.canary == 20
    assert world.status.failed_checks == 0
    assert world.status.phase == Phase.PROGRESSING
    assert world.alerts("warn")
    world.hook_ok["more"] = True
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 20, 40, 0]


# ---- A/B and Blue/Green ----------------------------------------------------------------------


def test_ab_testing():
    world = released_world(
        {
            "iterations": 3,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
            "metrics": [SUCCESS_RATE],
        }
    )
    world.run_to(Phase.PROMOTING)
    assert world.status.iterations == 3
    assert world.routes == Routes(0, 100, False)
    assert [e.message for e in world.events("AdvanceIteration")][-1] == "Advance podinfo.test canary iteration 3/3"
    world.run_to(Phase.SUCCEEDED)
    assert world.routes == Routes(100, 0, False)
    assert world.distinct_weights() == [0, 100, 0]


def test_blue_green():
    world = released_world({"iterations": 3, "metrics": [SUCCESS_RATE]})
    world.run_to(Phase.PROMOTING)
    routes = [a for a in world.actions if isinstance(a, SetRoutes)]
    assert routes == [SetRoutes(0, 100)]  # users stay on the primary during the iterations
    world.run_to(Phase.SUCCEEDED)
    assert world.distinct_weights() == [0, 100, 0]
    assert world.promoted == ["rev2"]


def test_blue_green_mirror():
    world = released_world({"iterations": 2, "mirror": True})
    world.run(lambda w: w.status.iterations == 2)
    assert world.routes == Routes(100, 0, True)
    world.run_to(Phase.SUCCEEDED)
    routes = [a for a in world.actions if isinstance(a, SetRoutes)]
    assert routes[0] == SetRoutes(100, 0, True)
    assert SetRoutes(0, 100) in routes
    assert world.routes == Routes(100, 0, False)


# ---- special modes ---------------------------------------------------------------------------


def test_skip_analysis_promotes_in_one_tick_once_the_canary_is_ready():
    world = released_world(None, skipAnalysis=True)
    world.target_state = Ready.WAITING
    world.tick()
    assert world.status.phase == Phase.PROGRESSING
    world.tick(5)
    assert world.status.phase == Phase.PROGRESSING
    world.target_state = Ready.READY
    d = world.tick(5)
    kinds = [type(a) for a in d.actions]
    assert Promote in kinds and SetRoutes in kinds and ScaleTarget in kinds
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.last_promoted_spec == "rev2"
    assert "Canary analysis was skipped, promotion finished." in [a.message for a in world.alerts("info")]


def test_suspend_does_nothing():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 20)
    world.canary = make_canary({"stepWeight": 10}, suspend=True)
    before = world.status
    for _ in range(5):
        d = world.tick(600)
        assert d.actions == []
    # nothing but when the suspension began is recorded
    assert world.status.suspended_since is not None
    assert world.status.model_copy(update={"suspended_since": None}) == before


def test_suspend_does_not_count_toward_the_deadline_or_the_interval():
    """issue 9.15: as a pause, a suspension shifts waitingSince and lastStepTime on resume."""
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 20)
    last_step = world.status.last_step_time
    spec = make_canary({"stepWeight": 10})
    world.canary = make_canary({"stepWeight": 10}, suspend=True)
    world.tick(10)
    world.tick(3000)
    world.canary = spec
    world.tick(0)
    assert world.status.suspended_since is None
    assert world.status.last_step_time == last_step + timedelta(seconds=3000)
    assert world.routes.canary == 20  # the next step is an interval after the last one, not now


def test_new_revision_mid_analysis_restarts():
    world = released_world({"stepWeight": 10, "threshold": 5, "metrics": [SUCCESS_RATE]})
    world.run(lambda w: w.routes.canary == 20)
    world.metric_value = 1.0
    world.tick(60)
    assert world.status.failed_checks == 1
    world.metric_value = 100.0
    transition = world.status.last_transition_time
    world.release("rev3")
    d = world.tick(1)
    st = world.status
    assert st.phase == Phase.PROGRESSING
    assert world.routes == Routes(100, 0, False)
    assert st.failed_checks == 0 and st.iterations == 0 and st.last_failure is None
    assert st.last_applied_spec == "rev3"
    assert st.last_transition_time == transition
    assert [e.message for e in d.actions if isinstance(e, Event)] == [
        "New revision detected! Restarting analysis for podinfo.test"
    ]
    world.run_to(Phase.SUCCEEDED)
    assert world.status.last_promoted_spec == "rev3"
    assert world.promoted == ["rev3"]


def test_same_revision_as_promoted_never_triggers():
    world = World(make_canary({"stepWeight": 50}))
    world.initialize()
    for _ in range(3):
        d = world.tick(60)
        assert d.actions == []
    # a run, reverted to the promoted revision in the middle
    world.release("rev2")
    world.run(lambda w: w.routes.canary == 50)
    world.release("rev1")
    world.tick(1)
    assert world.status.phase == Phase.SUCCEEDED
    assert world.routes == Routes(100, 0, False)
    assert not world.target_up
    assert world.promoted == []
    for _ in range(3):
        assert world.tick(60).actions == []


def test_reverting_after_a_failure_does_not_start_a_run():
    world = released_world({"stepWeight": 50, "threshold": 1, "metrics": [SUCCESS_RATE]})
    world.metric_value = 0
    world.run_to(Phase.FAILED)
    world.release("rev1")
    world.tick(60)
    assert world.status.phase == Phase.FAILED
    assert world.status.last_applied_spec == "rev1"
    assert not world.target_up


def test_tracked_config_change_triggers_a_run():
    world = World(make_canary({"stepWeight": 50}))
    world.initialize()
    base = world.observe

    def observe():
        return dataclasses.replace(base(), revision="rev1-cfg", tracked_configs={"configmap/cfg": "abc"})

    world.observe = observe
    world.tick(1)
    assert world.status.phase == Phase.PROGRESSING
    assert world.status.tracked_configs == {"configmap/cfg": "abc"}


def test_target_missing_during_the_analysis_rolls_back_at_once():
    """issue 9.5: a canary whose Deployment was deleted has no pods: its share of the traffic
    goes back to the primary now, not at some deadline (30 % stayed on it for an hour)."""
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    world.target_exists = False
    d1 = world.tick(60)
    assert world.routes == Routes(100, 0, False)
    assert world.status.phase == Phase.FAILED and world.status.canary_weight == 0
    assert world.status.last_failure.check == "stalled"
    assert "TargetMissing" in [e.reason for e in d1.actions if isinstance(e, Event)]
    assert world.alerts("error")
    cond = world.status.condition(engine.STALLED)
    assert cond.status == "True" and cond.reason == "TargetMissing"
    assert "podinfo.test not found" in cond.message
    d2 = world.tick(60)
    assert not [a for a in d2.actions if not isinstance(a, Event)]  # nothing more to do
    world.target_exists = True
    world.tick(1)
    assert world.status.condition(engine.STALLED) is None
    assert world.status.phase == Phase.FAILED and world.routes == Routes(100, 0, False)


def test_target_missing_while_steady_only_reports():
    world = released_world({"stepWeight": 10})
    world.release("rev1")
    world.target_exists = False
    d = world.tick(60)
    assert not any(isinstance(a, (SetRoutes, ScaleTarget, Promote)) for a in d.actions)
    assert world.status.condition(engine.STALLED).reason == "TargetMissing"


def test_observation_error_is_reported_and_never_acted_on():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    world.error = "cannot read VirtualService podinfo: 403"
    d = world.tick(60)
    assert [type(a) for a in d.actions] == [Event]
    assert world.status.condition(engine.STALLED).message == world.error
    assert world.tick(60).actions == []


# ---- plan ------------------------------------------------------------------------------------


def test_plan_asks_only_for_what_the_tick_uses():
    world = released_world(
        {
            "stepWeight": 50,
            "maxWeight": 50,
            "metrics": [SUCCESS_RATE],
            "webhooks": [
                {"name": "smoke", "url": "http://x", "type": "pre-rollout"},
                {"name": "load", "url": "http://x", "type": "rollout"},
                {"name": "more", "url": "http://x", "type": "confirm-traffic-increase"},
                {"name": "ok", "url": "http://x", "type": "confirm-promotion"},
                {"name": "abort", "url": "http://x", "type": "rollback"},
                {"name": "go", "url": "http://x", "type": "confirm-rollout"},
            ],
        }
    )
    world.tick()  # new revision detected
    assert world.plans[-1].webhooks == ("confirm-rollout",) and not world.plans[-1].metrics
    world.tick()  # first step
    assert world.plans[-1].webhooks == ("rollback", "pre-rollout", "confirm-traffic-increase")
    assert not world.plans[-1].metrics
    world.tick(10)  # not due
    assert world.plans[-1].webhooks == ("rollback",) and not world.plans[-1].metrics
    world.tick(50)  # at max weight: analysis then promotion gate
    assert world.plans[-1].webhooks == ("rollback", "rollout", "confirm-promotion")
    assert world.plans[-1].metrics
    assert world.status.phase == Phase.PROMOTING
    world.tick(60)
    assert world.plans[-1].webhooks == () and not world.plans[-1].metrics


def test_missing_check_results_decide_nothing():
    canary = make_canary({"stepWeight": 50, "metrics": [SUCCESS_RATE]})
    world = released_world({"stepWeight": 50, "metrics": [SUCCESS_RATE]})
    world.run(lambda w: w.routes.canary == 50)
    obs = dataclasses.replace(world.observe(), now=world.now + timedelta(seconds=60))
    assert engine.plan(canary, world.status, obs).metrics
    d = engine.step(canary, world.status, obs)  # metrics not run
    assert d.actions == [] and d.status == world.status
    assert d.wake_after == engine.RETRY_AFTER_MISSING_CHECKS


def test_step_is_deterministic_and_pure():
    world = released_world({"stepWeight": 50, "metrics": [SUCCESS_RATE]})
    world.tick()
    obs = world.observe()
    obs = world.run_checks(obs, engine.plan(world.canary, world.status, obs))
    a = engine.step(world.canary, world.status, obs)
    b = engine.step(world.canary, world.status, obs)
    assert a == b


def test_promoted_condition_messages_follow_flagger():
    world = released_world({"stepWeight": 50})
    world.tick()
    assert world.promoted_condition().message == "New revision detected, progressing canary analysis."
    world.run_to(Phase.PROMOTING)
    assert world.promoted_condition().message == "Canary analysis completed, starting primary rolling update."
    world.run_to(Phase.FINALISING)
    assert world.promoted_condition().message == "Canary analysis completed, routing all traffic to primary."


def test_last_transition_time_changes_only_with_the_phase():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    transition = world.status.last_transition_time
    world.run(lambda w: w.routes.canary == 40)
    assert world.status.last_transition_time == transition


def test_routes_missing_mid_run_are_recreated_without_touching_weights():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    world.routes = None
    d = world.tick(60)
    assert Initialize() in d.actions
    assert not any(isinstance(a, (SetRoutes, Promote, ScaleTarget)) for a in d.actions)
    assert world.status.condition(engine.STALLED).reason == "RoutesMissing"


def test_primary_missing_mid_run_is_not_recreated_from_an_unpromoted_target():
    world = released_world({"stepWeight": 10})
    world.run(lambda w: w.routes.canary == 10)
    world.primary_exists = False
    d = world.tick(60)
    assert d.actions and not any(isinstance(a, (Initialize, SetRoutes, Promote)) for a in d.actions)
    assert world.status.condition(engine.STALLED).reason == "PrimaryMissing"


def test_routes_missing_in_steady_state_are_recreated():
    world = World(make_canary({"stepWeight": 10}))
    world.initialize()
    world.routes = None
    d = world.tick(60)
    assert Initialize() in d.actions
    world.tick(1)
    assert world.status.condition(engine.STALLED) is None


def test_retrying_a_failed_initialization_copies_the_new_target_into_the_primary():
    world = World(make_canary({"stepWeight": 10}, progressDeadlineSeconds=60))
    world.primary_state = Ready.FAILED
    world.run_to(Phase.FAILED)
    world.primary_state = Ready.READY
    world.release("rev2")
    d = world.tick(1)
    assert Promote("rev2") in d.actions and world.status.phase == Phase.INITIALIZING
    world.run_to(Phase.INITIALIZED)


def test_a_new_run_forgets_the_previous_failure():
    world = released_world({"stepWeight": 50, "threshold": 1, "metrics": [SUCCESS_RATE]})
    world.metric_value = 0
    world.run_to(Phase.FAILED)
    assert world.status.last_failure is not None
    world.metric_value = 100
    world.release("rev3")
    world.tick(1)
    assert world.status.phase == Phase.PROGRESSING
    assert world.status.last_failure is None and world.status.failed_checks == 0
    world.run_to(Phase.SUCCEEDED)


def test_user_setting_failed_checks_aborts_the_run():
    world = released_world({"stepWeight": 10, "threshold": 3})
    world.run(lambda w: w.routes.canary == 20)
    world.status = world.status.model_copy(update={"failed_checks": 3})
    world.tick(1)
    assert world.status.phase == Phase.FAILED
    assert world.status.last_failure.check == "failed-checks"
    assert world.routes == Routes(100, 0, False)


def test_plan_while_waiting_for_approval():
    world = released_world(
        {
            "stepWeight": 50,
            "webhooks": [
                {"name": "go", "url": "http://x", "type": "confirm-rollout"},
                {"name": "abort", "url": "http://x", "type": "rollback"},
            ],
        }
    )
    world.hook_ok["go"] = False
    world.tick()
    assert world.status.phase == Phase.WAITING
    world.tick(10)
    assert world.plans[-1].webhooks == ("rollback",)
    world.tick(50)
    assert world.plans[-1].webhooks == ("rollback", "confirm-rollout")
    world.hook_ok["abort"] = True
    world.tick(1)
    assert world.status.phase == Phase.FAILED
    assert world.status.last_applied_spec == "rev2"
    # the aborted revision does not start again by itself
    world.hook_ok["abort"] = False
    assert world.tick(600).actions == []
