"""A cluster reduced to what the engine looks at, for whole releases decided tick by tick
through the real engine: `canary simulate` and the engine's unit tests share it.

The world answers the checks the plan asks for (metric values and webhook answers, constant
or one per call), applies the engine's actions (routes, replicas, the primary, promotions)
and keeps a record of what happened. The caller moves the clock (``tick(advance)``, or
``run`` which jumps by the engine's wake_after).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from canary import engine
from canary.adapters.comparison import fixed_bounds
from canary.adapters.prometheus import evaluate
from canary.models import Canary, CanaryStatus, Condition
from canary.types import (
    Action,
    Alert,
    CheckPlan,
    Event,
    Initialize,
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


def plain_verdict(name: str, value: float | None, low: float | None, high: float | None) -> MetricResult:
    """A metric held to its bounds, without the operator's messages (see World.measure)."""
    ok = value is not None and (low is None or value >= low) and (high is None or value <= high)
    return MetricResult(name, "q", value, min=low, max=high, ok=ok)


def operator_verdict(name: str, value: float | None, low: float | None, high: float | None) -> MetricResult:
    """A metric judged as the operator judges a query result (with its messages)."""
    return evaluate(name, f"(simulated {name})", value, low, high)


def series(value: Any) -> list[Any]:
    """A constant or a list of values, one per call (the last one repeats)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def samples(given: Any, step: int, now: datetime) -> tuple[tuple[float, float], ...]:
    """A compared metric's series for analysis step `step`: one list of values for every step,
    or one list per step (the last repeats); samples one second apart, ending now."""
    if not given:
        return ()
    values = given[min(step, len(given) - 1)] if isinstance(given[0], (list, tuple)) else given
    end = now.timestamp()
    return tuple((end - len(values) + 1 + i, float("nan") if v is None else float(v))
                 for i, v in enumerate(values))


class World:
    """What the engine looks at: set the fields, tick, read the records."""

    def __init__(self, canary: Canary, revision: str = "rev1", now: datetime = T0):
        self.canary = canary
        self.status = CanaryStatus()
        self.now = now
        self.revision = revision
        self.routes: Routes | None = None
        self.target_exists = True
        self.target_up = True  # replicas > 0
        self.target_state = Ready.READY
        self.primary_exists = False
        self.primary_state = Ready.READY
        self.replicas = 2
        self.readiness_message = ""  # of the workloads ("": "target" and "primary")
        self.refusal_message = "denied"  # of a webhook that refuses
        self.metric_value: float | None = 100.0
        """The value of every metric not in metric_values."""
        self.metric_values: dict[str, Any] = {}
        """Per metric name: a value, or one value per analysis step (None: no data)."""
        self.metric_samples: dict[str, Any] = {}
        """Compared metrics: per name {canary: [...], primary: [...]}, one list for every step
        or one list per step (see samples())."""
        self.hook_ok: dict[str, Any] = {}
        """Per webhook name: the answer, or one per call (default: pass; rollback: no)."""
        self.measure: Callable[[str, float | None, float | None, float | None], MetricResult] = plain_verdict
        """How a metric value is judged: plain_verdict, or operator_verdict (canary simulate)."""
        self.error: str | None = None
        self.check_invariants = True
        """Assert after each tick that step() left its input alone and the weight is the routed one."""
        self.metric_steps = 0
        self.hook_calls: dict[str, int] = {}
        # recordings
        self.decisions: list[engine.Decision] = []
        self.actions: list[Action] = []
        self.weights: list[int] = []
        self.phases: list[Phase] = []
        self.plans: list[CheckPlan] = []
        self.promoted: list[str] = []
        self.called_hooks: list[tuple[str, str]] = []
        self.last_obs: Observation | None = None

    # -- observation -----------------------------------------------------------------------

    def observe(self) -> Observation:
        target = None
        if self.target_exists:
            replicas = self.replicas if self.target_up else 0
            ready = replicas if self.target_state is Ready.READY else 0
            target = WorkloadState(self.canary.spec.target_ref.name,
                                   Readiness(self.target_state, self.readiness_message or "target"),
                                   replicas=replicas, ready_replicas=ready)
        primary = None
        if self.primary_exists:
            ready = self.replicas if self.primary_state is Ready.READY else 0
            primary = WorkloadState(f"{self.canary.spec.target_ref.name}-primary",
                                    Readiness(self.primary_state, self.readiness_message or "primary"),
                                    self.replicas, ready)
        return Observation(now=self.now, target=target, primary=primary, revision=self.revision,
                           routes=self.routes, error=self.error)

    def run_checks(self, obs: Observation, check_plan: CheckPlan) -> Observation:
        analysis = self.canary.spec.analysis
        assert analysis is not None or not (check_plan.webhooks or check_plan.metrics)
        results = []
        for type_ in check_plan.webhooks:
            for hook in analysis.webhooks_of(type_) if analysis else []:
                n = self.hook_calls.get(hook.name, 0)
                answers = series(self.hook_ok.get(hook.name, type_ != "rollback"))
                ok = bool(answers[min(n, len(answers) - 1)])
                self.hook_calls[hook.name] = n + 1
                self.called_hooks.append((type_, hook.name))
                results.append(WebhookResult(hook.name, type_, ok, 200 if ok else 403, "" if ok else self.refusal_message))
                if ok == (type_ == "rollback"):
                    break  # the answer that decides (a refusal, or a rollback requested)
        metrics: tuple[MetricResult, ...] | None = None
        if check_plan.metrics and analysis is not None:
            out = []
            for m in analysis.metrics or []:
                values = series(self.metric_values.get(m.name, self.metric_value))
                value = values[min(self.metric_steps, len(values) - 1)]
                low, high = fixed_bounds(m, m.name == "request-success-rate")
                result = self.measure(m.name, None if value is None else float(value), low, high)
                if m.compare is not None:
                    given = self.metric_samples.get(m.name) or {}
                    result = dataclasses.replace(
                        result, canary_samples=samples(given.get("canary"), self.metric_steps, self.now),
                        primary_samples=samples(given.get("primary"), self.metric_steps, self.now))
                out.append(result)
            self.metric_steps += 1
            metrics = tuple(out)
        return dataclasses.replace(obs, webhooks=tuple(results), metrics=metrics)

    # -- acting ----------------------------------------------------------------------------

    def apply(self, action: Action) -> None:
        if isinstance(action, Initialize):
            self.primary_exists = True
            if self.routes is None and action.routes:
                self.routes = Routes(100, 0, False)
        elif isinstance(action, SetRoutes):
            self.routes = Routes(action.primary, action.canary, action.mirror)
        elif isinstance(action, ScaleTarget):
            self.target_up = action.up
        elif isinstance(action, Promote):
            self.primary_exists = True
            self.promoted.append(action.revision)

    def tick(self, advance: float = 0.0) -> engine.Decision:
        self.now += timedelta(seconds=advance)
        obs = self.observe()
        check_plan = engine.plan(self.canary, self.status, obs)
        self.plans.append(check_plan)
        obs = self.run_checks(obs, check_plan)
        self.last_obs = obs
        before = self.status.model_dump() if self.check_invariants else None
        decision = engine.step(self.canary, self.status, obs)
        if before is not None:
            assert self.status.model_dump() == before, "step() mutated its input status"
        for action in decision.actions:
            self.apply(action)
        self.actions.extend(decision.actions)
        self.decisions.append(decision)
        self.status = decision.status
        self.phases.append(self.status.phase)
        if self.routes is not None:
            if self.check_invariants:
                assert self.status.canary_weight == self.routes.canary
            self.weights.append(self.routes.canary)
        return decision

    def run(self, until: Callable[[World], bool], max_ticks: int = 200) -> None:
        """Tick, jumping the clock by wake_after, until `until(world)` holds."""
        decision = self.tick()
        for _ in range(max_ticks):
            if until(self):
                return
            decision = self.tick(decision.wake_after)
        raise AssertionError(f"not reached after {max_ticks} ticks; phases {self.phases[-10:]}")

    def run_to(self, *phases: Phase, max_ticks: int = 200) -> None:
        self.run(lambda w: w.status.phase in phases, max_ticks)

    # -- helpers ---------------------------------------------------------------------------

    def initialize(self) -> None:
        self.run_to(Phase.INITIALIZED)

    def release(self, revision: str = "rev2") -> None:
        self.revision = revision

    def events(self, reason: str | None = None) -> list[Event]:
        return [a for a in self.actions if isinstance(a, Event) and (reason is None or a.reason == reason)]

    def alerts(self, severity: str | None = None) -> list[Alert]:
        return [a for a in self.actions if isinstance(a, Alert) and (severity is None or a.severity == severity)]

    def distinct_weights(self) -> list[int]:
        out: list[int] = []
        for w in self.weights:
            if not out or out[-1] != w:
                out.append(w)
        return out

    def promoted_condition(self) -> Condition | None:
        return self.status.condition("Promoted")
