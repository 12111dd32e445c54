"""One tick of one Canary: observe, ask the engine, apply its actions, write the status.

This is the only place where the pure engine meets I/O. It reads workloads and routes
from watch caches (never a GET per tick), runs exactly the checks the engine asks for,
applies the actions in order and patches the status only when it changed. A failing
action stops the tick without writing the status, so the next tick starts again from
what is really in the cluster.

Command annotations (canary.dev/promote, abort, ...) are read into the Observation; the
engine decides them. The order that makes them act once:

1. the engine decides (and records the annotation value's id in status.consumedCommands),
2. the actions are applied,
3. the status is written (with that id),
4. the decided annotations are removed with one merge patch that carries the
   resourceVersion of the object just written (a conflict means the Canary changed, maybe
   a new command: the annotation is left for the next tick).

A crash before 3 repeats 1-2 on the next tick from what is really in the cluster (the
actions are idempotent: set routes, scale, copy the template). A crash between 3 and 4
leaves an annotation whose id is already recorded: the next tick only removes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping, Protocol

from pydantic import ValidationError

from canary import engine
from canary.commands import parse_annotations
from canary.adapters import prometheus, webhooks
from canary.adapters.events import EventRecorder
from canary.adapters.kube import ApiError, Kube
from canary.adapters.autoscaler import Autoscalers
from canary.adapters.configs import ConfigCopier, tracked_configs_of
from canary.adapters.workload import WorkloadError, Workloads, primary_name
from canary.models import Canary, CanaryStatus, Condition
from canary.readiness import deployment_readiness
from canary.revision import revision as make_revision
from canary.revision import template_hash
from canary.routers.base import Router, RouterError
from canary.types import (
    Alert,
    CallWebhooks,
    Event,
    Initialize,
    Observation,
    Promote,
    Routes,
    ScaleTarget,
    SetRoutes,
    WorkloadState,
)

log = logging.getLogger("canary.reconciler")

RETRY_AFTER_ERROR = 5.0  # seconds before a tick that failed on I/O is tried again
INVALID_RECHECK = 60.0


class Caches(Protocol):
    """Read access to what the watches already hold."""

    def deployment(self, namespace: str, name: str) -> dict | None: ...

    def metric_template(self, namespace: str, name: str) -> dict | None: ...

    def config(self, kind: str, namespace: str, name: str) -> dict | None: ...


@dataclass
class Deps:
    kube: Kube
    workloads: Workloads
    router_for: Callable[[Canary], Router]
    events: EventRecorder
    metrics_server: str = "http://prometheus:9090"
    mesh_provider: str = "istio"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    on_decision: Callable[[Canary, CanaryStatus], None] | None = None  # operator metrics hook
    on_alert: Callable[[Canary, Alert], Awaitable[None]] | None = None
    configs: ConfigCopier | None = None  # copies of tracked ConfigMaps/Secrets for the primary
    autoscalers: Autoscalers | None = None  # the primary HPA
    observe_metrics: Callable[[Canary, Awaitable[Any]], Awaitable[Any]] | None = None  # check values, query latency


def _workload_state(dep: dict | None, now: datetime, threshold: int, deadline: int, *,
                    zero_replicas_ready: bool = True) -> WorkloadState | None:
    if dep is None:
        return None
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    return WorkloadState(
        name=dep["metadata"]["name"],
        readiness=deployment_readiness(dep, now, threshold, deadline, zero_replicas_ready=zero_replicas_ready),
        replicas=int(spec.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
    )


def status_of(obj: Mapping[str, Any]) -> CanaryStatus:
    raw = obj.get("status") or {}
    try:
        return CanaryStatus.model_validate(raw)
    except ValidationError:
        return CanaryStatus()


async def write_status(kube: Kube, canary_obj: Mapping[str, Any], old: CanaryStatus,
                       new: CanaryStatus) -> dict | None:
    """Patch the status subresource if, and only if, it changed; return the object as written."""
    if new == old or new.dump() == old.dump():  # (==: cheap when the ledger entries are shared)
        return None
    meta = canary_obj["metadata"]
    return await kube.patch(
        "canary.dev/v1beta1",
        "canaries",
        meta["namespace"],
        meta["name"],
        {"status": new.to_patch()},
        subresource="status",
    )
    return True


async def report_invalid(deps: Deps, obj: Mapping[str, Any], message: str) -> dict | None:
    """Bad input: a status condition and a Warning event, never a change to traffic."""
    old = status_of(obj)
    new = old.model_copy(deep=True)
    now = deps.clock()
    cond = Condition(type="Valid", status="False", reason="InvalidSpec", message=message,
                     last_update_time=now, last_transition_time=now)
    prev = old.condition("Valid")
    if prev and prev.status == "False" and prev.message == message:
        return None  # already reported
    new.conditions = [c for c in new.conditions if c.type != "Valid"] + [cond]
    await deps.events.emit(dict(obj), "Warning", "InvalidSpec", message, now)
    try:
        return await write_status(deps.kube, obj, old, new)
    except ApiError as e:
        log.warning("could not write status: %s", e)
        return None


def _interval(canary: Canary) -> float:
    return canary.spec.analysis.interval_seconds if canary.spec.analysis else 60.0


def _route_condition(status: CanaryStatus, problem: str | None, now: datetime) -> None:
    """RouteAccepted=False while a Gateway does not accept our route; the release is not held
    (the parent may simply not have seen our last write yet)."""
    prev = status.condition("RouteAccepted")
    if problem is None:
        status.conditions = [c for c in status.conditions if c.type != "RouteAccepted"]
    elif prev is None or prev.message != problem:
        status.conditions = [c for c in status.conditions if c.type != "RouteAccepted"] + [
            Condition(type="RouteAccepted", status="False", reason="NotAccepted", message=problem,
                      last_update_time=now, last_transition_time=now)]


def _clear_invalid(status: CanaryStatus) -> None:
    status.conditions = [c for c in status.conditions if c.type != "Valid"]


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return "invalid Canary spec: " + "; ".join(parts)


async def observe(deps: Deps, canary: Canary, caches: Caches, router: Router, now: datetime) -> Observation:
    ns = canary.namespace
    spec = canary.spec
    analysis = spec.analysis
    canary_threshold = analysis.canary_ready_threshold_value if analysis else 100
    primary_threshold = analysis.primary_ready_threshold_value if analysis else 100
    target_obj = caches.deployment(ns, spec.target_ref.name)
    primary_obj = caches.deployment(ns, primary_name(canary))
    target = _workload_state(target_obj, now, canary_threshold, spec.progress_deadline)
    primary = _workload_state(primary_obj, now, primary_threshold, spec.progress_deadline,
                              zero_replicas_ready=False)
    rev = ""
    tracked: dict[str, str] = {}
    problems: list[str] = []
    if target_obj is not None:
        tracked, problems = tracked_configs_of(target_obj, _config_lookup(caches, ns))
        rev = make_revision(template_hash((target_obj.get("spec") or {}).get("template") or {}), tracked)
    routes: Routes | None = await router.get_routes(canary)
    commands = parse_annotations(canary.metadata.get("annotations"))
    return Observation(now=now, target=target, primary=primary, revision=rev, routes=routes,
                       tracked_configs=tracked, error="; ".join(problems) or None, commands=commands)


def _config_lookup(caches: Caches, namespace: str):
    return lambda kind, name: caches.config(kind, namespace, name)


async def _config_copies(deps: Deps, canary: Canary, caches: Caches, target: Mapping[str, Any],
                         tracked: Mapping[str, str] | None, init: bool) -> dict[str, str]:
    """Sync the primary's copies of the tracked configs; {} when nothing is tracked."""
    lookup = _config_lookup(caches, canary.namespace)
    if tracked is None:
        tracked = tracked_configs_of(target, lookup)[0]
    if not tracked or deps.configs is None:
        return {}
    return await deps.configs.sync(canary, canary.namespace, tracked, lookup, init=init)


async def run_checks(deps: Deps, canary: Canary, status: CanaryStatus, obs: Observation, caches: Caches) -> Observation:
    plan = engine.plan(canary, status, obs)
    hook_results: list = []
    for hook_type in plan.webhooks:
        hook_results.extend(await webhooks.call_webhooks(canary, hook_type, status.phase.value, obs.revision))
    metrics = None
    if plan.metrics:
        run = prometheus.run_metrics(canary, deps.metrics_server, caches.metric_template,
                                     mesh_provider=deps.mesh_provider)
        metrics = await (deps.observe_metrics(canary, run) if deps.observe_metrics else run)
    return replace(obs, webhooks=tuple(hook_results), metrics=metrics)


async def apply(deps: Deps, canary: Canary, obj: Mapping[str, Any], router: Router, caches: Caches,
                action: Any, now: datetime, obs: Observation | None = None) -> None:
    ns = canary.namespace
    tracked = obs.tracked_configs if obs is not None else None
    if isinstance(action, Initialize):
        target = caches.deployment(ns, canary.spec.target_ref.name)
        if target is None:
            return
        copies = await _config_copies(deps, canary, caches, target, tracked, init=True)
        await deps.workloads.initialize(canary, target, revision=(obs.revision if obs else None) or None,
                                        config_copies=copies)
        if deps.autoscalers is not None:
            await deps.autoscalers.reconcile(canary, init=True)
        await router.reconcile(canary)
    elif isinstance(action, SetRoutes):
        await router.set_routes(canary, Routes(action.primary, action.canary, action.mirror))
    elif isinstance(action, ScaleTarget):
        target = caches.deployment(ns, canary.spec.target_ref.name)
        if target is not None:
            await deps.workloads.scale_target(canary, target, up=action.up)
    elif isinstance(action, Promote):
        target = caches.deployment(ns, canary.spec.target_ref.name)
        if target is not None:
            copies = await _config_copies(deps, canary, caches, target, tracked, init=False)
            await deps.workloads.promote(canary, target, action.revision, config_copies=copies)
            if deps.autoscalers is not None:
                await deps.autoscalers.reconcile(canary, init=False)
    elif isinstance(action, Event):
        await deps.events.emit(dict(obj), action.type, action.reason, action.message, now)
        await webhooks.send_event(canary, action.message, action.type, (canary.status or CanaryStatus()).phase.value,
                                  (canary.status or CanaryStatus()).last_applied_spec or "")
    elif isinstance(action, Alert):
        if deps.on_alert is not None:
            await deps.on_alert(canary, action)
        else:
            log.info("alert %s for %s/%s: %s", action.severity, ns, canary.name, action.message)
    elif isinstance(action, CallWebhooks):
        await webhooks.call_webhooks(canary, action.type, action.phase, canary.status.last_applied_spec
                                     if canary.status else "", stop_early=False)
    else:  # pragma: no cover - the engine only emits the types above
        raise TypeError(f"unknown action {action!r}")


@dataclass(frozen=True)
class TickResult:
    wake_after: float
    written: dict | None = None  # the Canary as our status patch left it (newer than the watch's copy)


async def reconcile(deps: Deps, obj: Mapping[str, Any], caches: Caches) -> TickResult:
    """Run one tick for the Canary `obj` (a full object as the watch delivered it).

    Returns when the Canary wants its next tick, and the object as written if the status
    changed: the next tick must start from that, never from an older copy, or it would
    decide the same transition twice.
    """
    now = deps.clock()
    try:
        canary = Canary.from_obj(dict(obj))
    except ValidationError as e:
        return TickResult(INVALID_RECHECK, await report_invalid(deps, obj, _validation_message(e)))
    if canary.spec.suspend:
        return TickResult(INVALID_RECHECK)
    status = status_of(obj)
    router = deps.router_for(canary)
    gen = (obj.get("metadata") or {}).get("generation")
    try:
        if gen is not None and status.observed_generation != int(gen) and status.phase.value not in ("", "Initializing"):
            # the spec changed (or we restarted): bring Services and routes in line, weights kept
            await apply(deps, canary, obj, router, caches, Initialize(), now)
        obs = await observe(deps, canary, caches, router, now)
        obs = await run_checks(deps, canary, status, obs, caches)
        decision = engine.step(canary, status, obs)
        for action in decision.actions:
            await apply(deps, canary, obj, router, caches, action, now, obs)
    except (WorkloadError, RouterError) as e:
        # the spec cannot be realised as written: say so, touch nothing else
        return TickResult(max(RETRY_AFTER_ERROR, _interval(canary)), await report_invalid(deps, obj, str(e)))
    except ApiError as e:
        msg = f"{canary.namespace}/{canary.name}: {e}"
        log.error("tick failed: %s", msg)
        await deps.events.emit(dict(obj), "Warning", "ApiError", str(e), now)
        return TickResult(RETRY_AFTER_ERROR)
    new = decision.status
    _clear_invalid(new)
    if hasattr(router, "status_problem"):
        _route_condition(new, await router.status_problem(canary), now)
    if gen is not None:
        new.observed_generation = int(gen)
    try:
        written = await write_status(deps.kube, obj, status, new)
    except ApiError as e:
        log.error("status write failed for %s/%s: %s", canary.namespace, canary.name, e)
        return TickResult(RETRY_AFTER_ERROR)
    if deps.on_decision is not None:
        deps.on_decision(canary, new)
    if decision.clear:
        cleared = await clear_commands(deps.kube, written or obj, decision.clear)
        written = cleared or written
    return TickResult(decision.wake_after, written)


async def clear_commands(kube: Kube, obj: Mapping[str, Any], keys: tuple[str, ...]) -> dict | None:
    """Remove decided command annotations; None if nothing was removed (absent or conflict)."""
    meta = obj.get("metadata") or {}
    present = [k for k in keys if k in (meta.get("annotations") or {})]
    if not present:
        return None
    body: dict[str, Any] = {"metadata": {"annotations": {k: None for k in present}}}
    if meta.get("resourceVersion"):
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
    try:
        return await kube.patch("canary.dev/v1beta1", "canaries", meta.get("namespace"), meta.get("name"), body)
    except ApiError as e:
        # 409: the Canary changed since we read it; the next tick sees the new version
        log.info("command annotations of %s/%s not cleared yet: %s", meta.get("namespace"), meta.get("name"), e)
        return None
