"""`canary simulate`: a whole release decided offline by the real engine, on a virtual clock.

No cluster, no Prometheus: a scenario says what the checks would measure and how webhooks would
answer, the World of canary.world (the one the engine's tests use) applies the engine's actions
(routes, replicas, promotion), and the clock jumps straight to the engine's next wake-up. A
release of many minutes is decided in milliseconds, exactly as the operator would decide it
given the same measurements.

Scenario (YAML, every key optional; checked by `Scenario`, and every metric and webhook named
must be one of the Canary's, so that a misspelt name is an error, not a silent pass):

    metrics:                 # per metric name: a value, or one value per analysis step
      request-success-rate: [100, 99.5, 42]     # (the last value repeats; null = no data)
      request-duration: 120
    samples:                 # compared metrics (compare: ...): the canary's and the primary's
      latency:               # series, one list for every step or one list per step
        canary: [131, 128, 135, 129]            # (samples one second apart, ending at the step)
        primary: [[100, 99, 103, 101], [98, 102, 100, 97]]
    webhooks:                # per webhook name: true/false, or one answer per call
      approve: [false, false, true]
    canaryReady: true        # false: the canary never becomes ready
    primaryReady: true       # false: the promoted primary never becomes ready
    maxMinutes: 240          # give up after this much virtual time

`canary simulate --from-prometheus URL --start T --end T` (canary/cli/replay.py) builds the
`metrics` of a scenario from a past window of a real Prometheus, one value per analysis step.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from canary import engine
from canary.models import Canary
from canary.types import Event, MetricResult, Phase, Promote, Ready, ScaleTarget
from canary.world import World, operator_verdict

TERMINAL = {Phase.SUCCEEDED, Phase.FAILED}
ADVISORY_OUTCOME = {"Promote": "Succeeded", "Rollback": "Failed"}
"""An advisory Canary's verdict as the outcome it stands for (the run itself waits for a person)."""
ROLLOUT_SECONDS = 1.0  # virtual time a Deployment takes to roll out

Value = Union[float, None]


class Scenario(BaseModel):
    """What the world answers during a simulated release."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metrics: dict[str, Union[Value, Annotated[list[Value], Field(min_length=1, max_length=10000)]]] = Field(
        default_factory=dict)
    webhooks: dict[str, Union[bool, Annotated[list[bool], Field(min_length=1, max_length=10000)]]] = Field(
        default_factory=dict)
    samples: dict[str, dict[Literal["canary", "primary"], Union[list[float], list[list[float]]]]] = Field(
        default_factory=dict)
    """Compared metrics: the canary's and the primary's series (one for every step, or one per step)."""
    canary_ready: bool = Field(True, alias="canaryReady")
    primary_ready: bool = Field(True, alias="primaryReady")
    max_minutes: float = Field(240, alias="maxMinutes", gt=0, le=7 * 24 * 60)


class ScenarioError(ValueError):
    """A scenario that does not fit the Canary; `problems` are (path, sentence)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_scenario(data: Any, canary: Canary) -> Scenario:
    """The scenario, checked against the models and against the Canary's metrics and webhooks."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError([("", "a scenario is a mapping (metrics:, webhooks:, canaryReady:, ...)")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            path = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                known = ["metrics", "samples", "webhooks", "canaryReady", "primaryReady", "maxMinutes"]
                problems.append((path, f"unknown key{_suggest(str(err['loc'][-1]), known)}"))
            else:
                problems.append((path, str(err["msg"])))
        raise ScenarioError(problems) from None
    analysis = canary.spec.analysis
    metrics = [m.name for m in (analysis.metrics or [])] if analysis else []
    hooks = [w.name for w in (analysis.webhooks or [])] if analysis else []
    problems = []
    for name in scenario.metrics:
        if name not in metrics:
            problems.append((f"metrics.{name}", f"the Canary has no metric {name!r}{_suggest(name, metrics)}; "
                             f"its metrics: {', '.join(metrics) or 'none'}"))
    for name in scenario.samples:
        if name not in metrics:
            problems.append((f"samples.{name}", f"the Canary has no metric {name!r}{_suggest(name, metrics)}; "
                             f"its metrics: {', '.join(metrics) or 'none'}"))
    for name in scenario.webhooks:
        if name not in hooks:
            problems.append((f"webhooks.{name}", f"the Canary has no webhook {name!r}{_suggest(name, hooks)}; "
                             f"its webhooks: {', '.join(hooks) or 'none'}"))
    if problems:
        raise ScenarioError(problems)
    return scenario


@dataclass
class Check:
    name: str
    value: float | None
    min: float | None
    max: float | None
    ok: bool
    message: str = ""

    @classmethod
    def of(cls, m: MetricResult) -> Check:
        return cls(m.name, m.value, m.min, m.max, m.ok, m.message)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "ok": self.ok,
                "message": self.message}


@dataclass
class Line:
    seconds: float
    phase: str
    weight: int
    failed_checks: int
    events: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    count: int = 1
    until: float | None = None  # the time of the last merged repetition

    def same(self, other: Line) -> bool:
        """Identical waiting steps (a closed gate polled again): merged as the ledger merges them."""
        return ((self.phase, self.weight, self.failed_checks, self.events, self.webhooks)
                == (other.phase, other.weight, other.failed_checks, other.events, other.webhooks)
                and [(c.name, c.ok) for c in self.checks] == [(c.name, c.ok) for c in other.checks])

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.seconds, 3), "phase": self.phase, "weight": self.weight,
                               "failedChecks": self.failed_checks, "events": self.events,
                               "checks": [c.as_dict() for c in self.checks], "webhooks": self.webhooks}
        if self.count > 1:
            out["count"] = self.count
            out["until"] = round(self.until or self.seconds, 3)
        return out


@dataclass
class Point:
    """The state after one tick (for pictures): every tick, merged or not."""

    seconds: float
    phase: str
    weight: int
    checks: list[Check]


@dataclass
class Result:
    outcome: str
    seconds: float
    ticks: int
    timeline: list[Line]
    last_failure: str | None
    points: list[Point] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "virtualSeconds": round(self.seconds, 3), "ticks": self.ticks,
                "lastFailure": self.last_failure, "timeline": [x.as_dict() for x in self.timeline]}


def _world(canary: Canary, scenario: Scenario) -> World:
    """The shared World, answering as the scenario says and judging metrics as the operator."""
    world = World(canary, revision="initial")
    world.replicas = 1
    world.readiness_message = "simulated"
    world.refusal_message = "simulated refusal"
    world.measure = operator_verdict
    world.check_invariants = False
    world.hook_ok = dict(scenario.webhooks)
    analysis = canary.spec.analysis
    for m in (analysis.metrics or []) if analysis else []:
        world.metric_values[m.name] = scenario.metrics.get(m.name, 100.0 if m.name == "request-success-rate" else 10.0)
    world.metric_samples = {name: dict(series) for name, series in scenario.samples.items()}
    return world


def _tick(world: World, scenario: Scenario) -> tuple[engine.Decision, list[str], list[Check], list[dict[str, Any]]]:
    """One tick; the workloads are ready unless the scenario says otherwise."""
    world.target_state = Ready.READY if scenario.canary_ready or not world.target_up else Ready.WAITING
    promoting = world.status.phase in (Phase.PROMOTING, Phase.FINALISING)
    world.primary_state = Ready.READY if scenario.primary_ready or not promoting else Ready.WAITING
    decision = world.tick()
    events = [f"{a.type} {a.reason}: {a.message}" for a in decision.actions if isinstance(a, Event)]
    obs = world.last_obs
    assert obs is not None
    checks = [Check.of(m) for m in obs.metrics or ()]
    hooks = [{"name": h.name, "type": h.type, "ok": h.ok} for h in obs.webhooks]
    return decision, events, checks, hooks


def simulate(canary: Canary, scenario: Scenario | dict[str, Any] | None = None) -> Result:
    """Initialize, then release a new revision and run until it is promoted or rolled back."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario or {}, canary)
    world = _world(canary, scenario)
    for _ in range(50):  # initialization
        decision, _, _, _ = _tick(world, scenario)
        if world.status.phase == Phase.INITIALIZED:
            break
        world.now += timedelta(seconds=max(decision.wake_after, 0.001))
    world.revision = "release"
    world.metric_steps = 0
    start = world.now
    limit = start + timedelta(minutes=scenario.max_minutes)
    timeline: list[Line] = []
    points: list[Point] = []
    ticks = 0
    while world.now <= limit:
        decision, events, checks, hooks = _tick(world, scenario)
        ticks += 1
        st = world.status
        t = (world.now - start).total_seconds()
        line = Line(t, st.phase.value, st.canary_weight, st.failed_checks, events, checks, hooks)
        points.append(Point(t, st.phase.value, st.canary_weight, checks))
        last = timeline[-1] if timeline else None
        if last is not None and (events or checks or hooks) and last.same(line):
            last.count += 1
            last.until = t
            last.checks = checks  # the latest values, as the ledger keeps them
        elif events or checks or hooks or last is None or (last.phase, last.weight, last.failed_checks) != (
                line.phase, line.weight, line.failed_checks):
            timeline.append(line)
        if st.phase in TERMINAL and st.last_applied_spec == "release":
            break
        if st.advisory is not None and st.advisory.verdict is not None:
            break  # an advisory Canary's run is decided by a person from here: its verdict is the outcome
        wait = decision.wake_after
        if any(isinstance(a, (ScaleTarget, Promote)) for a in decision.actions):
            # a rollout: in a cluster the Deployment's watch event wakes the Canary when it is done
            wait = min(wait, ROLLOUT_SECONDS)
        world.now += timedelta(seconds=max(wait, 0.001))
    st = world.status
    if st.phase not in TERMINAL and st.advisory is not None and st.advisory.verdict is not None:
        # what --expect compares: the run a person would have had without advisory mode
        outcome = ADVISORY_OUTCOME[st.advisory.verdict]
    else:
        outcome = st.phase.value if st.phase in TERMINAL else f"undecided after {scenario.max_minutes:g} min"
    failure = st.last_failure.message if st.last_failure and st.phase == Phase.FAILED else None
    return Result(outcome, (world.now - start).total_seconds(), ticks, timeline, failure, points)


def _num(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def check_text(c: Check) -> str:
    bounds = ", ".join(x for x in (f"min {_num(c.min)}" if c.min is not None else "",
                                   f"max {_num(c.max)}" if c.max is not None else "") if x)
    text = f"{c.name} {_num(c.value)}" + (f" ({bounds})" if bounds else "") + (" ok" if c.ok else " FAILED")
    return text + (f": {c.message}" if not c.ok and c.message else "")


def render(result: Result) -> str:
    out = []
    for line in result.timeline:
        head = f"{_clock(line.seconds):>8}  {line.phase:<17} weight={line.weight:<3} failedChecks={line.failed_checks}"
        if line.count > 1:
            head += f"  (x{line.count} until {_clock(line.until or line.seconds)})"
        out.append(head)
        out.extend(f"{'':10}{check_text(c)}" for c in line.checks)
        out.extend(f"{'':10}webhook {h['name']} ({h['type']}): {'ok' if h['ok'] else 'refused'}" for h in line.webhooks)
        out.extend(f"{'':10}{e}" for e in line.events)
    tail = f"OUTCOME {result.outcome} after {_clock(result.seconds)} of virtual time ({result.ticks} ticks)"
    if result.last_failure:
        tail += f" — {result.last_failure}"
    out.append(tail)
    return "\n".join(out)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"+{m}m{s:02d}s" if m else f"+{s}s"
