"""Property tests of the engine: random specs and random observation sequences, invariants
checked after every tick (see World in test_engine for the fake cluster)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary import engine
from canary.types import Phase, Promote, Ready, ScaleTarget, SetRoutes
from tests.unit.test_engine import SUCCESS_RATE, World, make_canary

HOOK_TYPES = [
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "rollback",
    "post-rollout",
]
REVISIONS = ["r1", "r2", "r3"]
RUN_PHASES = (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING)


@st.composite
def analyses(draw) -> dict[str, Any]:
    mode = draw(st.sampled_from(["stepWeight", "stepWeights", "ab", "bluegreen"]))
    spec: dict[str, Any] = {
        "interval": draw(st.sampled_from(["1s", "10s", "30s", "1m", "2m"])),
        "threshold": draw(st.integers(1, 4)),
    }
    if mode == "stepWeight":
        spec["stepWeight"] = draw(st.integers(1, 100))
        if draw(st.booleans()):
            spec["maxWeight"] = draw(st.integers(1, 100))
        spec["mirror"] = draw(st.booleans())
    elif mode == "stepWeights":
        spec["stepWeights"] = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=5)))
        if draw(st.booleans()):
            spec["maxWeight"] = draw(st.integers(1, 100))
    else:
        spec["iterations"] = draw(st.integers(1, 4))
        if mode == "ab":
            spec["match"] = [{"headers": {"x-canary": {"exact": "yes"}}}]
        else:
            spec["mirror"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["stepWeightPromotion"] = draw(st.integers(1, 60))
    if draw(st.booleans()):
        spec["metrics"] = [SUCCESS_RATE]
    hooks = draw(st.sets(st.sampled_from(HOOK_TYPES), max_size=4))
    spec["webhooks"] = [{"name": f"h-{t}", "url": "http://x", "type": t} for t in sorted(hooks)]
    return spec


_READY = [Ready.READY] * 6 + [Ready.WAITING, Ready.WAITING, Ready.FAILED]
ops = st.one_of(
    st.tuples(st.just("time"), st.sampled_from([0, 1, 5, 20, 60, 61, 120, 300, 900])),
    st.tuples(st.just("release"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("release"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("target"), st.sampled_from(_READY)),
    st.tuples(st.just("primary"), st.sampled_from(_READY)),
    st.tuples(st.just("metric"), st.sampled_from([100.0, 100.0, 99.5, 98.0, None])),
    st.tuples(st.just("hook"), st.tuples(st.sampled_from(HOOK_TYPES), st.booleans())),
    st.tuples(st.just("hook"), st.tuples(st.sampled_from(HOOK_TYPES), st.booleans())),
    st.tuples(st.just("target_exists"), st.sampled_from([True, True, False])),
    st.tuples(st.just("error"), st.sampled_from([None, None, "boom"])),
    st.tuples(st.just("suspend"), st.sampled_from([False, False, True])),
)


def apply_op(world: World, op: tuple[str, Any], analysis: dict[str, Any], extra: dict[str, Any]) -> float:
    kind, value = op
    if kind == "time":
        return float(value)
    if kind == "target":
        world.target_state = value
    elif kind == "primary":
        world.primary_state = value
    elif kind == "metric":
        world.metric_value = value
    elif kind == "hook":
        type_, ok = value
        world.hook_ok[f"h-{type_}"] = ok
    elif kind == "release":
        world.revision = value
    elif kind == "target_exists":
        world.target_exists = value
    elif kind == "error":
        world.error = value
    elif kind == "suspend":
        world.canary = make_canary(analysis, suspend=value, **extra)
    return 0.0


def checked_tick(world: World, advance: float, state: dict[str, Any]) -> None:
    """One tick with every invariant checked."""
    world.now += timedelta(seconds=advance)
    canary, before = world.canary, world.status
    obs = world.observe()
    check_plan = engine.plan(canary, before, obs)
    assert check_plan == engine.plan(canary, before, obs)
    obs = world.run_checks(obs, check_plan)
    if "decided" in state:
        # a value may be decided again only after its annotation was seen gone
        present = {c.name: c.id for c in obs.commands}
        state["decided"] = {k for k in state["decided"] if present.get(k[0]) == k[1]}

    # the plan covers everything step() needs
    tick = engine._Tick(canary, before, obs, planning=False)
    tick.run()

    decision = engine.step(canary, before, obs)
    assert decision == engine.step(canary, before, obs), "step() is not deterministic"
    assert decision.wake_after >= 0
    for action in decision.actions:
        world.apply(action)
    world.decisions.append(decision)
    world.status = after = decision.status
    analysis = canary.spec.analysis
    strategy = analysis.strategy
    phase = after.phase
    # a tick that decided a command (or resumed) may move the weight and the step time by hand
    commanded = after.last_command != before.last_command or (before.paused is None) != (after.paused is None)
    annotations = getattr(world, "annotations", None)
    if annotations is not None:
        check_commands(world, before, after, decision, state)
        if world.clearing:
            for key in decision.clear:
                annotations.pop(key, None)

    # canaryWeight is the routed weight
    if world.routes is not None:
        assert after.canary_weight == world.routes.canary
    weight = after.canary_weight
    assert 0 <= weight <= 100

    # a run started (or waiting for approval) while traffic sat on the target after a failed
    # promotion, with a primary that cannot serve, is exempt: the target is the only workload
    # serving, and Kubernetes rolls the new revision out on it (docs/design.md, crash safety)
    held = (*RUN_PHASES, Phase.WAITING)
    if phase in held and before.phase not in held:
        state["fix_forward"] = weight > analysis.max_weight_value
    if phase not in held:
        state["fix_forward"] = False
    if strategy == "canary":
        # a failed initialization/promotion leaves traffic on the target (0/100) until the
        # next initialization or run
        primary_failed = (
            phase in (Phase.FAILED, Phase.INITIALIZING)
            and after.last_failure is not None
            and after.last_failure.check == engine.PRIMARY_READINESS_CHECK
        )
        if not primary_failed and not state["fix_forward"]:
            assert weight <= analysis.max_weight_value, (phase, weight)
        if phase == Phase.PROGRESSING and before.phase == Phase.PROGRESSING and world.routes:
            if not state["fix_forward"] and before.last_applied_spec == after.last_applied_spec and not commanded:
                assert weight >= before.canary_weight  # weights only go up during the analysis
    elif phase not in (Phase.PROMOTING, Phase.FINALISING):  # stepWeightPromotion may step back
        assert weight in (0, 100)

    # never promote past the threshold
    if phase == Phase.PROMOTING and before.phase != Phase.PROMOTING:
        assert after.failed_checks < analysis.threshold_value
        assert any(isinstance(a, Promote) for a in decision.actions)

    # a rollback ends at 100/0 (the failed initialization/promotion keeps the target serving)
    if phase == Phase.FAILED and before.phase != Phase.FAILED:
        assert after.last_failure is not None
        if after.last_failure.check != engine.PRIMARY_READINESS_CHECK:
            assert (world.routes.primary, world.routes.canary, world.routes.mirrored) == (100, 0, False)
            assert world.target_up is False
            assert after.failed_checks >= 0

    # the promoted revision never starts an analysis
    if phase == Phase.WAITING:
        assert world.revision != after.last_promoted_spec
    if phase in RUN_PHASES:
        assert after.last_applied_spec != after.last_promoted_spec
    if phase in RUN_PHASES and before.phase not in RUN_PHASES:
        assert obs.revision != before.last_promoted_spec

    # analysis steps at most once per interval
    if before.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION) and phase == before.phase and not commanded:
        if before.last_step_time and after.last_step_time and after.last_step_time != before.last_step_time:
            gap = (after.last_step_time - before.last_step_time).total_seconds()
            assert gap >= analysis.interval_seconds - 1e-6

    # a stall never advances a release: no promotion, no scale-up, and traffic only goes back to
    # the primary (an abort, a rollback webhook, the deadline, a deleted target) or to what the
    # last written decision already routed
    if obs.error or obs.target is None:
        assert not any(isinstance(a, Promote) or (isinstance(a, ScaleTarget) and a.up) for a in decision.actions)
        intended = before.intent.routes if before.intent and before.intent.routes else None
        for a in decision.actions:
            if isinstance(a, SetRoutes):
                assert (a.primary, a.canary) == (100, 0) or (
                    intended is not None and (a.primary, a.canary) == (intended.primary, intended.canary))
    if canary.spec.suspend:
        assert decision.actions == []
        assert after.model_copy(update={"suspended_since": None}) == before.model_copy(update={"suspended_since": None})

    # the last transition time moves only with the phase
    if phase == before.phase:
        assert after.last_transition_time == before.last_transition_time

    # the ledger is bounded and only grows on ticks that decided something
    assert len(after.ledger or []) <= 50
    if after.ledger != before.ledger:
        assert after != before


def check_commands(world: World, before, after, decision, state: dict[str, Any]) -> None:
    """Invariants of command annotations."""
    last = after.last_command
    if last is not None and last != before.last_command:
        # a command value is decided once, however often it is seen
        key = (last.name, last.id)
        assert key not in state["decided"], f"{key} decided twice"
        state["decided"].add(key)
        assert (after.consumed_commands or {}).get(last.name) == last.id
    # a pause holds: nothing but a command or a rollback webhook touches traffic
    if before.paused is not None and after.paused is not None and last == before.last_command:
        if after.phase != Phase.FAILED:
            assert not any(isinstance(a, (SetRoutes, ScaleTarget, Promote)) for a in decision.actions)
            assert after.canary_weight == before.canary_weight
            assert after.phase == before.phase
    # decided annotations are cleared, except a pause that still holds
    for key in decision.clear:
        name = key.split("/", 1)[1]
        assert name != "pause" or after.paused is None
        assert name in (after.consumed_commands or {})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    analysis=analyses(),
    deadline=st.sampled_from([30, 120, 600]),
    initialized=st.booleans(),
    script=st.lists(st.tuples(ops, st.integers(1, 8)), max_size=40),
)
def test_invariants_hold_for_random_histories(analysis, deadline, initialized, script):
    extra = {"progressDeadlineSeconds": deadline}
    world = World(make_canary(analysis, **extra), revision="r1")
    state = {"fix_forward": False}
    if initialized:
        world.initialize()
    checked_tick(world, 0, state)
    for op, ticks in script:
        advance = apply_op(world, op, analysis, extra)
        checked_tick(world, advance, state)
        # then let the engine's own timer drive a few ticks
        for _ in range(ticks):
            checked_tick(world, world.decisions[-1].wake_after, state)


COMMAND_NAMES = ["promote", "abort", "retry", "pause", "resume", "set-weight"]
command_ops = st.one_of(
    ops,
    st.tuples(st.just("release"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("time"), st.sampled_from([0, 1, 5, 20, 60])),
    st.tuples(st.just("command"), st.tuples(st.sampled_from(COMMAND_NAMES), st.integers(-5, 105))),
    st.tuples(st.just("command"), st.tuples(st.sampled_from(COMMAND_NAMES), st.integers(-5, 105))),
    st.tuples(st.just("command"), st.tuples(st.sampled_from(COMMAND_NAMES), st.integers(0, 50))),
    st.tuples(st.just("command"), st.tuples(st.just("set-weight"), st.integers(0, 100))),
    st.tuples(st.just("unpause"), st.just(None)),
    st.tuples(st.just("clearing"), st.booleans()),
    st.tuples(st.just("plain"), st.sampled_from(["abort", "promote", "set-weight"])),
)


def apply_command_op(world, op: tuple[str, Any], analysis: dict[str, Any], extra: dict[str, Any],
                     counter: list[int]) -> float:
    from canary import commands

    kind, value = op
    if kind == "command":
        name, weight = value
        counter[0] += 1  # every value the "CLI" writes is unique (its `at`)
        world.annotations[commands.annotation(name)] = commands.encode(
            "alice", reason="r", at=str(counter[0]), weight=weight if name == "set-weight" else None)
        return 0.0
    if kind == "plain":  # a kubectl user writing the same plain value again and again
        world.annotations[commands.annotation(value)] = "20" if value == "set-weight" else "yes"
        return 0.0
    if kind == "unpause":
        world.annotations.pop("canary.dev/pause", None)
        return 0.0
    if kind == "clearing":
        world.clearing = value
        return 0.0
    return apply_op(world, op, analysis, extra)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    analysis=analyses(),
    deadline=st.sampled_from([30, 120, 600]),
    script=st.lists(st.tuples(command_ops, st.integers(0, 3)), max_size=40),
)
def test_commands_never_break_the_invariants(analysis, deadline, script):
    """Random commands (also repeated, stuck or removed annotations) among random histories:
    weights stay within [0, maxWeight], a rollback ends at 100/0, no value acts twice, a pause
    holds."""
    from tests.unit.test_commands import CommandWorld

    extra = {"progressDeadlineSeconds": deadline}
    world = CommandWorld(make_canary(analysis, **extra), revision="r1")
    world.initialize()
    world.release("r2")  # most histories start with a run in progress
    state = {"fix_forward": False, "decided": set()}
    counter = [0]
    checked_tick(world, 0, state)
    for op, ticks in script:
        advance = apply_command_op(world, op, analysis, extra, counter)
        checked_tick(world, advance, state)
        for _ in range(ticks):
            checked_tick(world, world.decisions[-1].wake_after, state)


@settings(max_examples=150, deadline=None)
@given(analysis=analyses())
def test_a_healthy_release_always_succeeds(analysis):
    """All checks pass and everything is ready: every release is promoted, weights rise one
    step per interval and never pass maxWeight."""
    analysis["webhooks"] = [w for w in analysis["webhooks"] if w["type"] != "rollback"]
    world = World(make_canary(analysis), revision="r1")
    world.initialize()
    for revision in ("r2", "r3"):
        world.weights.clear()
        world.release(revision)
        world.run_to(Phase.SUCCEEDED, max_ticks=500)
        assert world.status.last_promoted_spec == revision
        assert world.status.failed_checks == 0
        assert (world.routes.primary, world.routes.canary) == (100, 0)
        assert not world.target_up
    assert world.promoted == ["r2", "r3"]


@settings(max_examples=200, deadline=None)
@given(
    analysis=analyses(),
    first=st.integers(1, 4),
    weights=st.lists(st.integers(-10, 120), min_size=1, max_size=4),
    abort=st.booleans(),
)
def test_manual_weights_stay_within_bounds(analysis, first, weights, abort):
    """set-weight during a run: the routed weight is always within [0, maxWeight] (or the
    command is rejected), and an abort afterwards always ends at 100/0."""
    from canary import commands
    from tests.unit.test_commands import CommandWorld

    analysis["webhooks"] = []
    world = CommandWorld(make_canary(analysis), revision="r1")
    world.initialize()
    world.release("r2")
    world.run(lambda w: w.status.last_step_time is not None or w.status.phase not in RUN_PHASES)
    for _ in range(first - 1):
        if world.status.phase != Phase.PROGRESSING:
            break
        world.tick(world.decisions[-1].wake_after)
    max_weight = make_canary(analysis).spec.analysis.max_weight_value
    for i, weight in enumerate(weights):
        before = world.status
        world.annotations["canary.dev/set-weight"] = commands.encode("a", at=str(i), weight=weight)
        world.tick(0)
        last = world.status.last_command
        assert last is not None and last.name == "set-weight"
        if last.result == "Applied":
            assert before.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
            assert 0 <= weight <= max_weight and world.routes.canary == weight
        elif before.phase not in (Phase.PROMOTING, Phase.FINALISING):
            # a rejected command changes nothing (a promotion in flight goes on by itself)
            assert world.routes.canary == before.canary_weight
        assert 0 <= world.routes.canary <= max(max_weight, before.canary_weight)
    if abort:
        phase = world.status.phase
        world.annotations["canary.dev/abort"] = commands.encode("a", reason="stop")
        world.tick(0)
        if phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION):
            assert world.status.phase == Phase.FAILED
            assert (world.routes.primary, world.routes.canary, world.routes.mirrored) == (100, 0, False)
            assert not world.target_up
