"""Command annotations (canary.dev/promote, abort, retry, pause, resume, set-weight) decided by
the pure engine, tick by tick in the fake world of test_engine."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from canary import commands, engine
from canary.types import Event, Phase, Promote, Ready, Routes, ScaleTarget, SetRoutes
from tests.unit.test_engine import SUCCESS_RATE, World, make_canary


class CommandWorld(World):
    """World plus the Canary's annotations: commands are read from them and the decided ones
    are removed after each tick, as the reconciler does (unless `clearing` is off)."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.annotations: dict[str, str] = {}
        self.clearing = True
        self.cleared: list[str] = []

    def observe(self):
        obs = super().observe()
        return dataclasses.replace(obs, commands=commands.parse_annotations(self.annotations))

    def tick(self, advance: float = 0.0) -> engine.Decision:
        decision = super().tick(advance)
        if self.clearing:
            for key in decision.clear:
                if self.annotations.pop(key, None) is not None:
                    self.cleared.append(key)
        return decision

    def command(self, name: str, value: str | None = None, by: str = "alice", reason: str = "",
                weight: int | None = None, at: str = "") -> None:
        if value is None:
            value = commands.encode(by, reason=reason, weight=weight, at=at)
        self.annotations[commands.annotation(name)] = value

    def ledger(self, prefix: str = "") -> list:
        return [e for e in self.status.ledger or [] if e.action.startswith(prefix)]


def world_for(analysis: dict[str, Any] | None = None, **spec: Any) -> CommandWorld:
    w = CommandWorld(make_canary(analysis, **spec))
    w.initialize()
    w.actions.clear()
    w.weights.clear()
    w.phases.clear()
    return w


CANARY = {"stepWeight": 10, "maxWeight": 50, "metrics": [SUCCESS_RATE]}


def progressing(analysis: dict[str, Any] | None = None, weight: int = 20, **spec: Any) -> CommandWorld:
    """A run in Progressing at `weight`."""
    w = world_for(analysis or CANARY, **spec)
    w.release("rev2")
    w.run(lambda x: x.status.phase == Phase.PROGRESSING and x.status.canary_weight >= weight)
    return w


def next_tick(w: CommandWorld) -> engine.Decision:
    return w.tick(w.decisions[-1].wake_after)


# ---- parsing -----------------------------------------------------------------------------------


def test_parse_json_and_plain_values():
    cmd = commands.parse("abort", json.dumps({"by": "alice", "reason": "latency  spike", "at": "2026-01-01T00:00:00Z"}))
    assert (cmd.by, cmd.reason, cmd.at, cmd.actor) == ("alice", "latency spike", "2026-01-01T00:00:00Z", "user:alice")
    plain = commands.parse("abort", "error budget burnt")
    assert (plain.by, plain.reason, plain.actor) == ("", "error budget burnt", "user")
    assert commands.parse("promote", "true").reason == ""
    assert commands.parse("set-weight", "40").weight == 40
    assert commands.parse("set-weight", " 40% ").weight == 40
    assert commands.parse("set-weight", '{"by": "bob", "weight": 30}').weight == 30
    bad = commands.parse("set-weight", "forty")
    assert bad.weight is None and "not a whole number" in bad.error
    assert commands.parse("set-weight", '{"by": "bob"}').error == "no weight given"
    # ids: stable for equal values, different otherwise
    assert commands.parse("abort", "x").id == commands.parse("abort", "x").id
    assert commands.parse("abort", "x").id != commands.parse("abort", "y").id
    assert commands.parse("abort", "x").id != commands.parse("retry", "x").id


def test_parse_annotations_keeps_only_commands_in_decision_order():
    found = commands.parse_annotations({
        "canary.dev/promote": "yes", "canary.dev/abort": "bad", "other/abort": "x",
        "canary.dev/last-handled-configuration": "{}",
    })
    assert [c.name for c in found] == ["abort", "promote"]


def test_encode_is_deterministic():
    a = commands.encode("alice", reason="r", at="t", weight=5)
    assert json.loads(a) == {"by": "alice", "reason": "r", "at": "t", "weight": 5}
    assert a == commands.encode("alice", reason="r", at="t", weight=5)


# ---- abort ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["progressing", "waiting-promotion", "waiting"])
def test_abort_rolls_back_with_the_reason(where):
    if where == "progressing":
        w = progressing()
    elif where == "waiting-promotion":
        w = world_for({**CANARY, "webhooks": [{"name": "approve", "type": "confirm-promotion", "url": "http://x"}]})
        w.hook_ok["approve"] = False
        w.release("rev2")
        w.run_to(Phase.WAITING_PROMOTION)
    else:
        w = world_for({**CANARY, "webhooks": [{"name": "go", "type": "confirm-rollout", "url": "http://x"}]})
        w.hook_ok["go"] = False
        w.release("rev2")
        w.run_to(Phase.WAITING)
    w.command("abort", reason="p99 latency doubled")
    d = w.tick(1)
    st = w.status
    assert st.phase == Phase.FAILED
    assert w.routes == Routes(100, 0, False) and w.target_up is False
    assert (st.last_failure.check, st.last_failure.value) == (engine.ABORT_CHECK, None)
    assert st.last_failure.message == "aborted by alice: p99 latency doubled"
    cond = w.promoted_condition()
    assert cond.status == "False" and "aborted by alice: p99 latency doubled" in cond.message
    applied = [e for e in d.actions if isinstance(e, Event) and e.reason == "CommandApplied"]
    assert len(applied) == 1 and "abort by alice" in applied[0].message
    entry = w.ledger("command:")[-1]
    assert entry.action == "command: abort by alice" and entry.actor == "user:alice"
    assert entry.phase == Phase.FAILED and entry.weight == 0 and "p99 latency doubled" in entry.message
    assert st.last_command.result == "Applied" and st.last_command.by == "alice"
    assert w.cleared == ["canary.dev/abort"] and not w.annotations
    assert w.alerts("error")


@pytest.mark.parametrize("phase", [Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED, Phase.PROMOTING])
def test_abort_is_rejected_outside_an_analysis(phase):
    w = world_for(CANARY)
    if phase != Phase.INITIALIZED:
        w.release("rev2")
        if phase == Phase.FAILED:
            w.metric_value = 50.0
        if phase == Phase.PROMOTING:
            w.primary_state = Ready.WAITING  # the promotion waits for the primary
        w.run_to(phase)
    before_routes = w.routes
    w.command("abort", reason="oops")
    d = w.tick(1)
    assert w.status.phase == phase
    assert not any(isinstance(a, (SetRoutes, ScaleTarget, Promote)) for a in d.actions)
    assert w.routes == before_routes
    warnings = [a for a in d.actions if isinstance(a, Event) and a.reason == "CommandRejected"]
    assert len(warnings) == 1 and warnings[0].type == "Warning" and "abort by alice" in warnings[0].message
    assert w.status.last_command.result == "Rejected"
    assert w.ledger("rejected:")[-1].action == "rejected: abort by alice"
    assert w.cleared == ["canary.dev/abort"]


def test_commands_while_initializing_are_rejected_but_pause_is_kept():
    w = CommandWorld(make_canary(CANARY))
    w.primary_state = Ready.WAITING
    w.tick()
    assert w.status.phase == Phase.INITIALIZING
    w.command("promote")
    w.command("pause", reason="hold the first run")
    w.tick(1)
    assert w.status.last_command is not None
    assert "canary.dev/promote" in w.cleared and "canary.dev/pause" in w.annotations
    assert w.status.paused is not None
    # initialization still completes; the first run is held
    w.primary_state = Ready.READY
    w.run_to(Phase.INITIALIZED)
    w.release("rev2")
    for _ in range(5):
        next_tick(w)
    assert w.status.phase == Phase.INITIALIZED


# ---- promote -------------------------------------------------------------------------------------


def test_promote_mid_analysis_skips_the_remaining_steps():
    w = progressing(weight=20)
    w.metric_value = 50.0  # failing metrics are not consulted any more
    w.command("promote", reason="verified by hand")
    w.tick(1)
    assert w.status.phase == Phase.PROMOTING
    assert w.promoted == ["rev2"]
    w.run_to(Phase.SUCCEEDED)
    assert max(w.weights) == 20
    assert w.status.last_promoted_spec == "rev2"
    assert w.routes == Routes(100, 0, False)
    entry = w.ledger("command: promote")[-1]
    assert entry.actor == "user:alice" and entry.phase == Phase.PROMOTING
    assert w.ledger("complete")
    assert w.cleared == ["canary.dev/promote"]
    assert w.promoted_condition().message == (
        "Canary promoted by alice (verified by hand) before the analysis completed, promotion finished.")


def test_promote_waits_for_the_canary_to_be_ready_and_keeps_the_annotation():
    w = progressing(weight=10)
    w.target_state = Ready.WAITING
    next_tick(w)  # starts waiting for readiness
    status = w.status
    w.command("promote")
    for _ in range(3):
        d = w.tick(5)
        assert w.status == status and d.clear == ()  # nothing decided, nothing written
    assert "canary.dev/promote" in w.annotations
    w.target_state = Ready.READY
    w.tick(1)
    assert w.status.phase == Phase.PROMOTING and w.cleared == ["canary.dev/promote"]


def test_promote_in_waiting_skips_the_confirm_rollout_gate():
    w = world_for({**CANARY, "webhooks": [{"name": "go", "type": "confirm-rollout", "url": "http://x"}]})
    w.hook_ok["go"] = False
    w.release("rev2")
    w.run_to(Phase.WAITING)
    w.command("promote")
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING and w.target_up
    assert w.ledger("start")[-1].actor == "user:alice"
    assert "canary.dev/promote" in w.annotations  # still to do
    w.run_to(Phase.SUCCEEDED)
    assert w.promoted == ["rev2"] and w.cleared == ["canary.dev/promote"]


def test_promote_pending_is_rejected_by_a_new_revision():
    w = progressing(weight=10)
    w.target_state = Ready.WAITING
    next_tick(w)
    w.command("promote")
    w.release("rev3")
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING and w.status.last_applied_spec == "rev3"
    assert w.status.last_command.result == "Rejected" and "new revision" in w.status.last_command.message
    assert w.cleared == ["canary.dev/promote"]


@pytest.mark.parametrize("phase", [Phase.INITIALIZED, Phase.SUCCEEDED])
def test_promote_with_nothing_to_promote_is_rejected(phase):
    w = world_for(CANARY)
    if phase == Phase.SUCCEEDED:
        w.release("rev2")
        w.run_to(Phase.SUCCEEDED)
    w.command("promote")
    d = w.tick(1)
    assert w.status.phase == phase and not any(isinstance(a, Promote) for a in d.actions)
    assert w.status.last_command.result == "Rejected"
    assert "nothing to promote" in w.status.last_command.message


def test_promote_while_paused_is_rejected():
    w = progressing()
    w.command("pause")
    w.tick(1)
    w.command("promote")
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING
    assert w.status.last_command.name == "promote" and w.status.last_command.result == "Rejected"
    assert "paused" in w.status.last_command.message


# ---- retry ---------------------------------------------------------------------------------------


def test_retry_runs_the_same_revision_again_after_an_abort():
    w = progressing()
    w.command("abort", reason="flaky dependency")
    w.tick(1)
    assert w.status.phase == Phase.FAILED
    for _ in range(3):  # the failed revision is not retried by itself
        next_tick(w)
    assert w.status.phase == Phase.FAILED
    w.command("retry", by="bob", reason="dependency fixed")
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING
    assert w.status.last_applied_spec == "rev2" and w.status.failed_checks == 0
    assert w.status.last_failure is None
    assert w.ledger("command: retry")[-1].actor == "user:bob"
    w.run_to(Phase.SUCCEEDED)
    assert w.promoted == ["rev2"]
    assert "canary.dev/retry" in w.cleared


def test_retry_after_a_metric_rollback():
    w = world_for(CANARY)
    w.release("rev2")
    w.metric_value = 50.0
    w.run_to(Phase.FAILED)
    w.metric_value = 100.0
    w.command("retry")
    w.run_to(Phase.SUCCEEDED)
    assert w.promoted == ["rev2"]


def test_retry_honours_the_confirm_rollout_gate():
    w = world_for({**CANARY, "webhooks": [{"name": "go", "type": "confirm-rollout", "url": "http://x"}]})
    w.release("rev2")
    w.run(lambda x: x.status.canary_weight >= 10)
    w.command("abort")
    w.tick(1)
    w.hook_ok["go"] = False
    w.command("retry")
    w.tick(1)
    assert w.status.phase == Phase.WAITING


@pytest.mark.parametrize("phase", [Phase.PROGRESSING, Phase.INITIALIZED])
def test_retry_outside_failed_is_rejected(phase):
    w = progressing() if phase == Phase.PROGRESSING else world_for(CANARY)
    w.command("retry")
    d = w.tick(1)
    assert w.status.phase == phase and not any(isinstance(a, ScaleTarget) for a in d.actions)
    assert w.status.last_command.result == "Rejected"


def test_retry_when_the_target_was_reverted_is_rejected():
    w = progressing()
    w.command("abort")
    w.tick(1)
    w.release("rev1")  # back at the promoted revision
    next_tick(w)
    w.command("retry")
    w.tick(1)
    assert w.status.last_command.result == "Rejected" and "promoted revision" in w.status.last_command.message


def test_retry_after_a_failed_initialization_initializes_again():
    w = CommandWorld(make_canary(CANARY, progressDeadlineSeconds=60))
    w.primary_state = Ready.WAITING
    w.run_to(Phase.FAILED)
    w.primary_state = Ready.READY
    w.command("retry")
    w.run_to(Phase.INITIALIZED)
    assert w.status.last_command.name == "retry" and w.status.last_command.result == "Applied"


# ---- pause / resume ------------------------------------------------------------------------------


def test_pause_holds_the_weight_and_resume_continues():
    w = progressing(weight=20)
    w.command("pause", reason="investigating")
    w.tick(1)
    st = w.status
    assert st.paused is not None and st.paused.by == "alice" and st.paused.reason == "investigating"
    assert w.ledger("command: pause")
    assert "canary.dev/pause" in w.annotations  # pause stays until removed
    held = w.status
    for _ in range(10):
        d = w.tick(60)
        assert not any(isinstance(a, (SetRoutes, ScaleTarget, Promote)) for a in d.actions)
        assert w.status == held  # held ticks decide nothing and change nothing
    w.release("rev3")  # not even a new revision starts while paused
    d = w.tick(60)
    assert w.status == held and d.actions == []
    w.release("rev2")
    del w.annotations["canary.dev/pause"]
    w.tick(1)
    assert w.status.paused is None
    assert w.ledger("command: resume")[-1].actor == "user"
    w.run_to(Phase.SUCCEEDED)
    assert w.promoted == ["rev2"]


def test_resume_command_removes_the_pause_annotation_too():
    w = progressing()
    w.command("pause")
    w.tick(1)
    w.command("resume", by="bob")
    w.tick(1)
    assert w.status.paused is None
    assert w.ledger("command: resume")[-1].actor == "user:bob"
    assert set(w.cleared) == {"canary.dev/pause", "canary.dev/resume"} and not w.annotations


def test_resume_when_not_paused_is_rejected():
    w = progressing()
    w.command("resume")
    w.tick(1)
    assert w.status.last_command.result == "Rejected" and "not paused" in w.status.last_command.message


def test_paused_time_does_not_count_toward_the_progress_deadline():
    w = world_for(CANARY, progressDeadlineSeconds=120)
    w.release("rev2")
    w.target_state = Ready.WAITING  # the canary never becomes ready
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING
    w.tick(60)  # 60 s of waiting
    w.command("pause")
    w.tick(1)
    w.tick(3600)  # an hour paused: far beyond the deadline
    assert w.status.phase == Phase.PROGRESSING
    del w.annotations["canary.dev/pause"]
    w.tick(1)  # resume
    resumed_at = w.now
    w.run_to(Phase.FAILED)
    assert w.status.last_failure.check == engine.PROGRESS_DEADLINE_CHECK
    waited_after = (w.now - resumed_at).total_seconds()
    assert 55 <= waited_after <= 65, waited_after  # only the remaining ~60 s


def test_paused_time_does_not_count_toward_the_interval():
    w = progressing(weight=20)
    last = w.status.last_step_time
    w.tick(30)  # half an interval
    w.command("pause")
    w.tick(1)
    w.tick(600)
    del w.annotations["canary.dev/pause"]
    w.tick(1)
    assert w.status.last_step_time == last + timedelta(seconds=601)
    w.tick(20)  # 51 s of the interval used: no step yet
    assert w.status.canary_weight == 20
    w.run(lambda x: x.status.canary_weight == 30)


def test_abort_while_paused_rolls_back():
    w = progressing()
    w.command("pause")
    w.tick(1)
    w.command("abort", reason="giving up")
    w.tick(1)
    assert w.status.phase == Phase.FAILED and w.routes == Routes(100, 0, False)
    assert w.status.last_failure.check == engine.ABORT_CHECK


def test_rollback_webhook_acts_while_paused():
    w = progressing({**CANARY, "webhooks": [{"name": "rb", "type": "rollback", "url": "http://x"}]})
    w.command("pause")
    w.tick(1)
    w.hook_ok["rb"] = True
    w.tick(1)
    assert w.status.phase == Phase.FAILED and w.status.last_failure.check == "rb"


# ---- set-weight ----------------------------------------------------------------------------------


def test_set_weight_routes_n_and_the_analysis_continues_from_there():
    w = progressing(weight=10)
    w.command("set-weight", weight=40)
    d = w.tick(1)
    assert w.routes == Routes(60, 40, False) and w.status.canary_weight == 40
    assert SetRoutes(60, 40, False) in d.actions
    assert w.ledger("command: set-weight")[-1].message == "canary weight 10 -> 40"
    assert w.cleared == ["canary.dev/set-weight"]
    d = w.tick(30)  # the analysis waits one full interval at 40
    assert w.status.canary_weight == 40
    w.run(lambda x: x.status.canary_weight != 40)
    assert w.status.canary_weight == 50
    w.run_to(Phase.SUCCEEDED)


def test_set_weight_plain_value_as_kubectl_would_write_it():
    w = progressing(weight=10)
    w.command("set-weight", value="30")
    w.tick(1)
    assert w.routes.canary == 30 and w.status.last_command.by is None
    assert w.ledger("command:")[-1].action == "command: set-weight by unknown"


def test_set_weight_lower_in_waiting_promotion_goes_back_to_progressing():
    w = world_for({**CANARY, "webhooks": [{"name": "approve", "type": "confirm-promotion", "url": "http://x"}]})
    w.hook_ok["approve"] = False
    w.release("rev2")
    w.run_to(Phase.WAITING_PROMOTION)
    w.command("set-weight", weight=20)
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING and w.routes.canary == 20


@pytest.mark.parametrize(
    ("value", "why"),
    [("60", "outside [0, 50]"), ("-1", "outside [0, 50]"), ("abc", "not a whole number")],
)
def test_set_weight_bad_values_are_rejected(value, why):
    w = progressing(weight=10)
    w.command("set-weight", value=value)
    d = w.tick(1)
    assert w.routes.canary == 10 and not any(isinstance(a, SetRoutes) for a in d.actions)
    assert w.status.last_command.result == "Rejected" and why in w.status.last_command.message
    assert w.cleared == ["canary.dev/set-weight"]


def test_set_weight_is_rejected_for_blue_green_and_outside_the_analysis():
    w = world_for({"iterations": 3})
    w.release("rev2")
    w.run(lambda x: x.status.iterations >= 1)
    w.command("set-weight", value="20")
    w.tick(1)
    assert "bluegreen" in w.status.last_command.message
    w = world_for(CANARY)
    w.command("set-weight", value="20")
    w.tick(1)
    assert w.status.last_command.result == "Rejected" and w.routes.canary == 0


def test_set_weight_while_paused_moves_and_holds():
    w = progressing(weight=10)
    w.command("pause")
    w.tick(1)
    w.command("set-weight", value="40")
    w.tick(1)
    assert w.routes.canary == 40
    for _ in range(5):
        w.tick(60)
    assert w.routes.canary == 40 and w.status.phase == Phase.PROGRESSING


def test_set_weight_waits_for_the_first_step():
    w = world_for(CANARY)
    w.release("rev2")
    w.target_state = Ready.WAITING
    w.tick(1)
    w.target_state = Ready.READY
    w.command("set-weight", value="20")
    w.tick(0)
    assert w.status.last_command.result == "Rejected"


# ---- idempotency -------------------------------------------------------------------------------


def test_a_command_seen_again_does_not_act_twice():
    """The status was written but the annotation could not be cleared (operator restart,
    conflict): the next ticks only clear it."""
    w = progressing()
    w.clearing = False
    w.command("abort", reason="once")
    d1 = w.tick(1)
    assert d1.clear == ("canary.dev/abort",)
    after = w.status
    entries = len(after.ledger)
    for _ in range(3):
        d = w.tick(1)
        assert d.clear == ("canary.dev/abort",)
        assert not any(isinstance(a, (SetRoutes, ScaleTarget, Event)) for a in d.actions)
        assert w.status == after and len(w.status.ledger) == entries
    # a retry after the next run started is not undone by the stale abort annotation
    w.command("retry")
    w.tick(1)
    assert w.status.phase == Phase.PROGRESSING
    next_tick(w)
    assert w.status.phase == Phase.PROGRESSING


def test_a_crash_before_the_status_write_repeats_the_same_outcome():
    w = progressing()
    w.command("set-weight", value="40")
    status = w.status
    obs = w.observe()
    first = engine.step(w.canary, status, w.run_checks(obs, engine.plan(w.canary, status, obs)))
    for action in first.actions:  # applied, but the status write was lost
        w.apply(action)
    w.tick(0)  # the same annotation, the old status
    assert w.routes.canary == 40 and w.status.canary_weight == 40
    assert w.status.consumed_commands == {"set-weight": commands.parse("set-weight", "40").id}


def test_the_same_plain_value_can_be_given_again_once_cleared():
    w = progressing(weight=10)
    w.command("set-weight", value="30")
    w.tick(1)
    assert w.status.consumed_commands  # the marker stays until the annotation is seen gone
    w.tick(1)
    assert w.status.consumed_commands is None
    w.run(lambda x: x.status.canary_weight == 40)
    w.command("set-weight", value="30")
    w.tick(1)
    assert w.routes.canary == 30


def test_at_most_one_command_is_applied_per_tick():
    w = progressing()
    w.command("abort", reason="stop")
    w.command("set-weight", value="40")
    d = w.tick(1)
    assert w.status.phase == Phase.FAILED and "canary.dev/set-weight" in w.annotations
    assert d.clear == ("canary.dev/abort",) and d.wake_after == 0
    w.tick(0)  # decided against the new state
    assert w.status.last_command.name == "set-weight" and w.status.last_command.result == "Rejected"
    assert w.routes == Routes(100, 0, False)


def test_plan_and_step_agree_with_commands():
    w = progressing({**CANARY, "webhooks": [{"name": "go", "type": "confirm-rollout", "url": "http://x"}]})
    w.command("abort")
    w.tick(1)
    w.command("retry")
    obs = w.observe()
    plan = engine.plan(w.canary, w.status, obs)
    assert plan.webhooks == ("confirm-rollout",)
    w.tick(0)
    assert w.status.phase == Phase.PROGRESSING


# ---- the reconciler: read, act, write the status, then clear -----------------------------------


class _Router:
    def __init__(self):
        self.routes: Routes | None = None
        self.sets: list[Routes] = []

    async def reconcile(self, canary):
        if self.routes is None:
            self.routes = Routes(100, 0, False)

    async def get_routes(self, canary):
        return self.routes

    async def set_routes(self, canary, routes):
        self.sets.append(routes)
        self.routes = routes

    async def finalize(self, canary):
        pass


class _Caches:
    def __init__(self, api):
        self.api = api

    def deployment(self, namespace, name):
        return self.api.get("apps", namespace, "deployments", name)

    def metric_template(self, namespace, name):
        return None


def _cluster():
    from datetime import datetime, timezone

    from canary.adapters.events import EventRecorder
    from canary.adapters.workload import Workloads
    from canary.reconciler import Deps
    from tests.unit.fakeapi import FakeApiServer

    api = FakeApiServer()
    kube = api.kube()
    router = _Router()
    clock = {"now": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    deps = Deps(kube=kube, workloads=Workloads(kube), router_for=lambda c: router, events=EventRecorder(kube),
                clock=lambda: clock["now"])
    api.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": "test"},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                      "template": {"metadata": {"labels": {"app": "podinfo"}},
                                   "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}}})
    api.put({"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "test"},
             "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                      "service": {"port": 9898},
                      "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10, "maxWeight": 50}}})
    return api, deps, router, clock


async def _tick(api, deps, clock, seconds: float = 1.0):
    from canary.reconciler import reconcile

    clock["now"] += timedelta(seconds=seconds)
    return await reconcile(deps, api.get("canary.dev", "test", "canaries", "podinfo"), _Caches(api))


def _canary(api) -> dict:
    return api.get("canary.dev", "test", "canaries", "podinfo")


def _annotate(api, key: str, value: str | None) -> None:
    import copy as _copy

    old = api.objects[("canary.dev", "test", "canaries", "podinfo")]
    new = _copy.deepcopy(old)
    annotations = new["metadata"].setdefault("annotations", {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value
    api._store("canary.dev", "test", "canaries", old, new)


def _events(api) -> list[dict]:
    return [o for (g, ns, p, _), o in api.objects.items() if p == "events"]


async def _progressing(api, deps, clock):
    for _ in range(5):
        await _tick(api, deps, clock)
    assert _canary(api)["status"]["phase"] == "Initialized"
    import copy as _copy

    old = api.objects[("apps", "test", "deployments", "podinfo")]
    new = _copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "podinfo:2"
    api._store("apps", "test", "deployments", old, new)
    for _ in range(4):
        await _tick(api, deps, clock, 10)
    st = _canary(api)["status"]
    assert st["phase"] == "Progressing" and st["canaryWeight"] >= 10


async def test_reconciler_acts_writes_the_marker_then_clears_the_annotation():
    api, deps, router, clock = _cluster()
    await _progressing(api, deps, clock)
    value = commands.encode("alice", reason="bad latency")
    _annotate(api, "canary.dev/abort", value)
    before = len(api.requests)
    result = await _tick(api, deps, clock)
    obj = _canary(api)
    assert "canary.dev/abort" not in (obj["metadata"].get("annotations") or {})
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["consumedCommands"] == {"abort": commands.parse("abort", value).id}
    assert obj["status"]["lastFailure"]["message"] == "aborted by alice: bad latency"
    assert router.routes == Routes(100, 0, False)
    # the order: the status write comes before the annotation patch
    writes = [(r.resource, r.verb) for r in api.requests[before:] if r.group == "canary.dev"]
    assert writes == [("canaries/status", "patch"), ("canaries", "patch")]
    assert result.written["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    messages = [e["message"] for e in _events(api) if e["reason"] == "CommandApplied"]
    assert messages and "abort by alice" in messages[-1]
    # the next tick sees the annotation gone and forgets the marker; then nothing is written
    await _tick(api, deps, clock)
    assert "consumedCommands" not in _canary(api)["status"]
    before = len(api.requests)
    await _tick(api, deps, clock)
    assert not [r for r in api.requests[before:] if r.verb in ("patch", "create", "update")]


async def test_reconciler_does_not_act_twice_when_the_clear_failed():
    api, deps, router, clock = _cluster()
    await _progressing(api, deps, clock)
    _annotate(api, "canary.dev/set-weight", "40")
    api.fail_next[("canaries", "patch")] = 409  # the clear conflicts
    await _tick(api, deps, clock)
    obj = _canary(api)
    assert obj["metadata"]["annotations"]["canary.dev/set-weight"] == "40"
    assert obj["status"]["canaryWeight"] == 40 and router.sets[-1] == Routes(60, 40, False)
    sets, events = len(router.sets), len(_events(api))
    ledger_before = obj["status"]["ledger"]
    await _tick(api, deps, clock)  # seen again: only cleared
    obj = _canary(api)
    assert "canary.dev/set-weight" not in (obj["metadata"].get("annotations") or {})
    assert len(router.sets) == sets and len(_events(api)) == events
    assert obj["status"]["ledger"] == ledger_before


async def test_reconciler_keeps_the_pause_annotation_and_rejects_with_a_warning():
    api, deps, router, clock = _cluster()
    await _progressing(api, deps, clock)
    weight = _canary(api)["status"]["canaryWeight"]
    _annotate(api, "canary.dev/pause", "investigating")
    _annotate(api, "canary.dev/retry", "yes")
    await _tick(api, deps, clock)
    await _tick(api, deps, clock)
    obj = _canary(api)
    assert obj["metadata"]["annotations"] == {"canary.dev/pause": "investigating"}
    assert obj["status"]["paused"]["reason"] == "investigating"
    warnings = [e for e in _events(api) if e["reason"] == "CommandRejected"]
    assert warnings and warnings[-1]["type"] == "Warning" and "retry" in warnings[-1]["message"]
    for _ in range(5):
        await _tick(api, deps, clock, 10)
    assert _canary(api)["status"]["canaryWeight"] == weight
    _annotate(api, "canary.dev/pause", None)
    for _ in range(8):
        await _tick(api, deps, clock, 10)
    assert _canary(api)["status"]["phase"] in ("Promoting", "Finalising", "Succeeded")


async def test_reconciler_reports_a_refused_name_as_an_invalid_spec():
    """A name the client refuses (InvalidName) ends as Valid=False and a Warning event, no crash."""
    from canary.adapters.kube import InvalidName

    api, deps, router, clock = _cluster()

    async def refuse(*args, **kwargs):
        raise InvalidName("name", "..", "may not be empty, '.' or '..'")

    deps.workloads.initialize = refuse
    await _tick(api, deps, clock)
    valid = [c for c in _canary(api)["status"]["conditions"] if c["type"] == "Valid"]
    assert valid and valid[0]["status"] == "False" and "'..'" in valid[0]["message"]
    assert [e for e in _events(api) if e["type"] == "Warning" and e["reason"] == "InvalidSpec"]
    assert router.sets == []


@pytest.mark.parametrize("analysis", [
    {"interval": "10s", "stepWeights": [0, 0]},
    {"interval": "10s", "stepWeight": 10, "webhooks": [{"name": "slow", "url": "http://127.0.0.1:1/",
                                                       "timeout": "1000h"}]},
    {"interval": "10s", "stepWeight": 10, "metrics": [{"name": "m", "thresholdRange": {"min": 2, "max": 1}}]},
])
async def test_reconciler_refuses_an_impossible_spec_before_any_action(analysis):
    import copy as _copy

    api, deps, router, clock = _cluster()
    old = api.objects[("canary.dev", "test", "canaries", "podinfo")]
    new = _copy.deepcopy(old)
    new["spec"]["analysis"] = analysis
    api._store("canary.dev", "test", "canaries", old, new)
    before = len(api.requests)
    await _tick(api, deps, clock)
    valid = [c for c in _canary(api)["status"]["conditions"] if c["type"] == "Valid"]
    assert valid and valid[0]["status"] == "False" and valid[0]["reason"] == "InvalidSpec"
    assert [e for e in _events(api) if e["type"] == "Warning" and e["reason"] == "InvalidSpec"]
    assert router.routes is None and router.sets == []
    written = {(r.resource, r.verb) for r in api.requests[before:] if r.verb in ("create", "patch", "update")}
    assert written == {("events", "create"), ("canaries/status", "patch")}


async def test_cross_namespace_refs_are_refused_when_the_operator_says_so():
    import copy as _copy

    from canary import security

    api, deps, router, clock = _cluster()
    old = api.objects[("canary.dev", "test", "canaries", "podinfo")]
    new = _copy.deepcopy(old)
    new["spec"]["analysis"]["metrics"] = [{"name": "m", "templateRef": {"name": "t", "namespace": "other"}}]
    new["spec"]["analysis"]["alerts"] = [{"name": "a", "providerRef": {"name": "p", "namespace": "test"}}]
    api._store("canary.dev", "test", "canaries", old, new)
    security.configure(security.Policy(no_cross_namespace_refs=True))
    try:
        await _tick(api, deps, clock)
    finally:
        security.configure(security.Policy())
    valid = [c for c in _canary(api)["status"]["conditions"] if c["type"] == "Valid"]
    assert valid and valid[0]["status"] == "False"
    assert "MetricTemplate other/t" in valid[0]["message"] and "alert a" not in valid[0]["message"]
    assert router.routes is None
    # off (the default, as Flagger): the same spec proceeds (routes once the primary is ready)
    await _tick(api, deps, clock, 61)
    await _tick(api, deps, clock, 1)
    assert router.routes is not None
