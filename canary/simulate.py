"""`canary simulate`: a whole release decided offline by the real engine, on a virtual clock.

No cluster, no Prometheus: a scenario says what the checks would measure and how webhooks would
answer, a tiny world applies the engine's actions (routes, replicas, promotion), and the clock
jumps straight to the engine's next wake-up. A release of many minutes is decided in
milliseconds, exactly as the operator would decide it given the same measurements.

Scenario (YAML, every key optional):

    metrics:                 # per metric name: a value, or one value per analysis step
      request-success-rate: [100, 99.5, 42]     # (the last value repeats; null = no data)
      request-duration: 120
    webhooks:                # per webhook name: true/false, or one answer per call
      approve: [false, false, true]
    canaryReady: true        # false: the canary never becomes ready
    primaryReady: true       # false: the promoted primary never becomes ready
    maxMinutes: 240          # give up after this much virtual time
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from canary import engine
from canary.adapters.prometheus import bounds, evaluate
from canary.models import Canary, CanaryStatus
from canary.types import (
    Event,
    MetricResult,
    Observation,
    Phase,
    Promote,
    Readiness,
    Ready,
    Routes,
    ScaleTarget,
    SetRoutes,
    WebhookResult,
    WorkloadState,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TERMINAL = {Phase.SUCCEEDED, Phase.FAILED}
ROLLOUT_SECONDS = 1.0  # virtual time a Deployment takes to roll out


def _series(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class Line:
    seconds: float
    phase: str
    weight: int
    failed_checks: int
    events: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"t": round(self.seconds, 3), "phase": self.phase, "weight": self.weight,
                "failedChecks": self.failed_checks, "events": self.events, "checks": self.checks}


@dataclass
class Result:
    outcome: str
    seconds: float
    ticks: int
    timeline: list[Line]
    last_failure: str | None

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "virtualSeconds": round(self.seconds, 3), "ticks": self.ticks,
                "lastFailure": self.last_failure, "timeline": [x.as_dict() for x in self.timeline]}


class World:
    """What the engine looks at, reduced to a few fields, driven by a scenario."""

    def __init__(self, canary: Canary, scenario: dict):
        self.canary = canary
        self.scenario = scenario
        self.now = T0
        self.status = CanaryStatus()
        self.revision = "initial"
        self.routes: Routes | None = None
        self.primary = False
        self.target_up = True
        self.metric_steps = 0
        self.hook_calls: dict[str, int] = {}

    def observe(self) -> Observation:
        canary_ready = self.scenario.get("canaryReady", True) or not self.target_up
        replicas = 1 if self.target_up else 0
        target = WorkloadState(self.canary.spec.target_ref.name,
                               Readiness(Ready.READY if canary_ready else Ready.WAITING, "simulated"),
                               replicas=replicas, ready_replicas=replicas if canary_ready else 0)
        primary = None
        if self.primary:
            ready = self.scenario.get("primaryReady", True) or self.status.phase not in (Phase.PROMOTING,
                                                                                          Phase.FINALISING)
            primary = WorkloadState(f"{self.canary.spec.target_ref.name}-primary",
                                    Readiness(Ready.READY if ready else Ready.WAITING, "simulated"), 1, int(ready))
        return Observation(now=self.now, target=target, primary=primary, revision=self.revision, routes=self.routes)

    def checks(self, obs: Observation, plan) -> Observation:
        analysis = self.canary.spec.analysis
        hooks = []
        for type_ in plan.webhooks:
            for hook in analysis.webhooks_of(type_):
                n = self.hook_calls.get(hook.name, 0)
                answers = _series(self.scenario.get("webhooks", {}).get(hook.name, type_ != "rollback"))
                ok = bool(answers[min(n, len(answers) - 1)])
                self.hook_calls[hook.name] = n + 1
                hooks.append(WebhookResult(hook.name, type_, ok, 200 if ok else 403, "" if ok else "simulated refusal"))
                if ok == (type_ == "rollback"):
                    break
        metrics: tuple[MetricResult, ...] | None = None
        if plan.metrics:
            out = []
            for m in analysis.metrics or []:
                values = _series(self.scenario.get("metrics", {}).get(m.name, 100.0 if m.name ==
                                                                     "request-success-rate" else 10.0))
                value = values[min(self.metric_steps, len(values) - 1)]
                lo, hi = bounds(m, m.name == "request-success-rate")
                out.append(evaluate(m.name, f"(simulated {m.name})", None if value is None else float(value), lo, hi))
            self.metric_steps += 1
            metrics = tuple(out)
        return replace(obs, webhooks=tuple(hooks), metrics=metrics)

    def apply(self, actions) -> list[str]:
        events = []
        for a in actions:
            if isinstance(a, SetRoutes):
                self.routes = Routes(a.primary, a.canary, a.mirror)
            elif isinstance(a, ScaleTarget):
                self.target_up = a.up
            elif isinstance(a, Promote):
                self.primary = True
            elif isinstance(a, Event):
                events.append(f"{a.type} {a.reason}: {a.message}")
            elif type(a).__name__ == "Initialize":
                self.primary = True
                if self.routes is None:
                    self.routes = Routes()
        return events

    def tick(self) -> tuple[engine.Decision, list[str], list[str]]:
        obs = self.observe()
        plan = engine.plan(self.canary, self.status, obs)
        obs = self.checks(obs, plan)
        decision = engine.step(self.canary, self.status, obs)
        events = self.apply(decision.actions)
        self.status = decision.status
        checks = [m.message for m in obs.metrics or ()] + [f"webhook {h.name} ({h.type}): "
                                                          f"{'ok' if h.ok else 'refused'}" for h in obs.webhooks]
        return decision, events, checks


def simulate(canary: Canary, scenario: dict | None = None) -> Result:
    """Initialize, then release a new revision and run until it is promoted or rolled back."""
    scenario = scenario or {}
    world = World(canary, scenario)
    for _ in range(50):  # initialization
        decision, _, _ = world.tick()
        if world.status.phase == Phase.INITIALIZED:
            break
        world.now += timedelta(seconds=max(decision.wake_after, 0.001))
    world.revision = "release"
    world.metric_steps = 0
    start = world.now
    limit = start + timedelta(minutes=float(scenario.get("maxMinutes", 240)))
    timeline: list[Line] = []
    ticks = 0
    while world.now <= limit:
        decision, events, checks = world.tick()
        ticks += 1
        st = world.status
        line = Line((world.now - start).total_seconds(), st.phase.value, st.canary_weight, st.failed_checks,
                    events, checks)
        last = timeline[-1] if timeline else None
        if events or last is None or (last.phase, last.weight, last.failed_checks) != (
                line.phase, line.weight, line.failed_checks):
            timeline.append(line)
        if st.phase in TERMINAL and st.last_applied_spec == "release":
            break
        wait = decision.wake_after
        if any(isinstance(a, (ScaleTarget, Promote)) for a in decision.actions):
            # a rollout: in a cluster the Deployment's watch event wakes the Canary when it is done
            wait = min(wait, ROLLOUT_SECONDS)
        world.now += timedelta(seconds=max(wait, 0.001))
    st = world.status
    outcome = st.phase.value if st.phase in TERMINAL else f"undecided after {scenario.get('maxMinutes', 240)} min"
    failure = st.last_failure.message if st.last_failure and st.phase == Phase.FAILED else None
    return Result(outcome, (world.now - start).total_seconds(), ticks, timeline, failure)


def render(result: Result) -> str:
    out = []
    for line in result.timeline:
        head = f"{_clock(line.seconds):>8}  {line.phase:<17} weight={line.weight:<3} failedChecks={line.failed_checks}"
        out.append(head)
        out.extend(f"{'':10}{c}" for c in line.checks)
        out.extend(f"{'':10}{e}" for e in line.events)
    tail = f"OUTCOME {result.outcome} after {_clock(result.seconds)} of virtual time ({result.ticks} ticks)"
    if result.last_failure:
        tail += f" — {result.last_failure}"
    out.append(tail)
    return "\n".join(out)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"+{m}m{s:02d}s" if m else f"+{s}s"
