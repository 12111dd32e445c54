"""What one tick reads from the cluster and does to it: the observation (watch caches, read
through on a miss), the checks the engine asks for, and the effects and notifications of a
decision. The order in which they happen, and why, is canary.reconciler's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, ContextManager, Mapping, Protocol

from canary import engine
from canary.commands import parse_annotations
from canary.adapters import comparison, webhooks
from canary.adapters.events import EventRecorder
from canary.adapters.kube import Kube
from canary.adapters.autoscaler import Autoscalers
from canary.adapters.configs import ConfigCopier, tracked_configs_of
from canary.adapters.workload import REVISION_ANNOTATION, Workloads, primary_name
from canary.adapters.workload.pods import pod_problem
from canary.models import Canary, CanaryStatus
from canary.readiness import deployment_readiness, unavailable_for
from canary.revision import revision as make_revision
from canary.revision import template_hash
from canary.routers.base import Router
from canary.types import (
    Alert,
    CallWebhooks,
    Event,
    Initialize,
    MetricResult,
    Observation,
    Promote,
    Readiness,
    Routes,
    ScaleTarget,
    SetRoutes,
    WebhookResult,
    WorkloadState,
)

log = logging.getLogger("canary.reconciler")

RETRY_AFTER_ERROR = 5.0  # seconds before a tick that failed on I/O is tried again
MAX_EVENT_POSTS = 200  # event-webhook posts in flight; beyond, a post is dropped (best effort)
_event_posts: set[asyncio.Task] = set()


def _post_in_background(coro: Awaitable[Any], where: str) -> None:
    """Event webhooks are posted beside the tick, not in it: a slow or tarpitting receiver
    (a tenant's address, or the global --event-webhook) must not stretch every tick."""
    if len(_event_posts) >= MAX_EVENT_POSTS:
        close = getattr(coro, "close", None)
        if close is not None:
            close()
        log.warning("event webhook of %s dropped: %d posts in flight", where, len(_event_posts))
        return

    async def post() -> None:
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - best effort, as Events are
            log.warning("event webhook of %s failed: %s", where, e)

    task = asyncio.create_task(post(), name=f"event-webhook:{where}")
    _event_posts.add(task)
    task.add_done_callback(_event_posts.discard)


async def drain_event_posts(timeout: float = 5.0) -> None:
    """Wait (bounded) for the event-webhook posts in flight, e.g. before the process stops."""
    if _event_posts:
        await asyncio.wait(set(_event_posts), timeout=timeout)

class StaleRevision(Exception):
    """The target no longer holds the revision that was analysed: nothing is promoted."""


class Gone(Exception):
    """The Canary is not there any more (or is another object of the same name, or is being
    deleted): this loop must stop acting for it."""


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
    # the metric checks: (canary, template lookup, secret lookup) -> results; None: Prometheus
    run_metrics: Callable[..., Awaitable[tuple[MetricResult, ...]]] | None = None
    call_webhooks: Callable[..., Awaitable[list[WebhookResult]]] | None = None  # None: canary.adapters.webhooks
    # last time the rollback webhooks of a Canary were polled (they are polled once per interval)
    rollback_polls: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # other Canaries that target the same Deployment and came first (None: not checked)
    rivals: Callable[[Canary], list[str]] | None = None
    # resourceVersion of an invalid status already reported (one Warning per version)
    bad_status_reported: dict[tuple[str, str], Any] = field(default_factory=dict)
    # phase name -> a context manager timing it (canary_operator_tick_phase_duration_seconds); None: untimed
    phase: Callable[[str], ContextManager[None]] | None = None
    event_webhook: str | None = None  # --event-webhook: the Events of Canaries without `event` webhooks


def timed(deps: Deps, name: str) -> ContextManager[None]:
    """Time one phase of a tick, if the operator asked for it (Deps.phase)."""
    return deps.phase(name) if deps.phase is not None else contextlib.nullcontext()


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


async def _with_pod_problem(deps: Deps, namespace: str, state: WorkloadState | None,
                            obj: dict | None) -> WorkloadState | None:
    """A Deployment that is not ready: the first failing pod's reason (ImagePullBackOff, ...)
    appended to its readiness message. One pod LIST in the Canary's namespace, only then."""
    if state is None or state.readiness.ready or not unavailable_for(obj, deps.clock(), POD_REASON_AFTER):
        return state
    problem = await pod_problem(deps.kube, namespace, obj)
    if not problem:
        return state
    return replace(state, readiness=Readiness(state.readiness.state, f"{state.readiness.message}; {problem}"))


POD_REASON_AFTER = 5.0
"""Seconds a Deployment is unavailable before its pods are read for a reason: pods starting
normally are not listed on every tick of a scale-up (4 LISTs per release on the testbed)."""


def _interval(canary: Canary) -> float:
    return canary.spec.analysis.interval_seconds if canary.spec.analysis else 60.0


async def _deployment(deps: Deps, caches: Caches, namespace: str, name: str) -> dict | None:
    """From the watch cache; a miss is read through (after a restart the cache may not hold the
    object yet: a missing target or primary must be true, not a cold cache)."""
    obj = caches.deployment(namespace, name)
    if obj is None:
        obj = await deps.kube.get("apps/v1", "deployments", namespace, name)
    return obj


def _template_lookup(deps: Deps, caches: Caches):
    async def lookup(namespace: str, name: str) -> dict | None:
        obj = caches.metric_template(namespace, name)
        if obj is None:  # not in the cache (yet): never count a cold cache as a failed check
            obj = await deps.kube.get("canary.dev/v1beta1", "metrictemplates", namespace, name)
        return obj
    return lookup


def _secret_lookup(deps: Deps):
    """provider.secretRef of a MetricTemplate: read when the check runs (no Secret is cached)."""
    async def lookup(namespace: str, name: str) -> dict[str, bytes] | None:
        obj = await deps.kube.get("v1", "secrets", namespace, name)
        if obj is None:
            return None
        out: dict[str, bytes] = {}
        for key, value in (obj.get("data") or {}).items():
            try:
                out[key] = base64.b64decode(value)
            except (ValueError, TypeError):
                continue
        return out
    return lookup


def primary_revision_of(primary: Mapping[str, Any] | None) -> str:
    template = ((primary or {}).get("spec") or {}).get("template") or {}
    return str(((template.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION) or "")


async def observe(deps: Deps, canary: Canary, caches: Caches, router: Router, now: datetime) -> Observation:
    ns = canary.namespace
    spec = canary.spec
    analysis = spec.analysis
    canary_threshold = analysis.canary_ready_threshold_value if analysis else 100
    primary_threshold = analysis.primary_ready_threshold_value if analysis else 100
    target_obj = await _deployment(deps, caches, ns, spec.target_ref.name)
    primary_obj = await _deployment(deps, caches, ns, primary_name(canary))
    target = _workload_state(target_obj, now, canary_threshold, spec.progress_deadline)
    primary = _workload_state(primary_obj, now, primary_threshold, spec.progress_deadline,
                              zero_replicas_ready=False)
    target = await _with_pod_problem(deps, ns, target, target_obj)
    primary = await _with_pod_problem(deps, ns, primary, primary_obj)
    rev = ""
    tracked: dict[str, str] = {}
    problems: list[str] = []
    if target_obj is not None:
        tracked, problems = tracked_configs_of(target_obj, _config_lookup(caches, ns))
        rev = make_revision(template_hash((target_obj.get("spec") or {}).get("template") or {}), tracked)
    routes: Routes | None = await router.get_routes(canary)
    commands = parse_annotations(canary.metadata.get("annotations"))
    last_poll = deps.rollback_polls.get((ns, canary.name))
    poll = last_poll is None or (now - last_poll).total_seconds() >= _interval(canary) or now < last_poll
    return Observation(now=now, target=target, primary=primary, revision=rev, routes=routes,
                       tracked_configs=tracked, error="; ".join(problems) or None, commands=commands,
                       primary_revision=primary_revision_of(primary_obj), rollback_poll=poll)


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
    call = deps.call_webhooks or webhooks.call_webhooks
    hook_results: list = []
    for hook_type in plan.webhooks:
        if hook_type == "rollback":
            deps.rollback_polls[(canary.namespace, canary.name)] = obs.now
        with timed(deps, "webhooks"):
            hook_results.extend(await call(canary, hook_type, status.phase.value, obs.revision))
    metrics = None
    if plan.metrics:
        if deps.run_metrics is not None:
            run = deps.run_metrics(canary, _template_lookup(deps, caches), _secret_lookup(deps))
        else:
            run = comparison.run_metrics(canary, deps.metrics_server, _template_lookup(deps, caches),
                                         _secret_lookup(deps), now=obs.now.timestamp(),
                                         mesh_provider=deps.mesh_provider)
        with timed(deps, "metrics"):
            metrics = await (deps.observe_metrics(canary, run) if deps.observe_metrics else run)
    return replace(obs, webhooks=tuple(hook_results), metrics=metrics)


async def _promote(deps: Deps, canary: Canary, caches: Caches, action: Promote) -> None:
    """Copy the target into the primary, if (and only if) it is still the analysed revision.

    The target is read fresh: the watch copy may be seconds old after a tick of webhooks and
    metric queries, and an image pushed meanwhile must never reach the primary unanalysed."""
    ns = canary.namespace
    target = await deps.kube.get("apps/v1", "deployments", ns, canary.spec.target_ref.name)
    if target is None:
        raise StaleRevision(f"{ns}/{canary.spec.target_ref.name} is gone; nothing is promoted")
    tracked, problems = tracked_configs_of(target, _config_lookup(caches, ns))
    now_rev = make_revision(template_hash((target.get("spec") or {}).get("template") or {}), tracked)
    if problems or now_rev != action.revision:
        raise StaleRevision(f"{ns}/{canary.spec.target_ref.name} changed to revision {now_rev} since "
                            f"revision {action.revision} was analysed; nothing is promoted")
    copies = await _config_copies(deps, canary, caches, target, tracked, init=False)
    await deps.workloads.promote(canary, target, action.revision, config_copies=copies)
    if deps.autoscalers is not None:
        await deps.autoscalers.reconcile(canary, init=False)


async def apply(deps: Deps, canary: Canary, obj: Mapping[str, Any], router: Router, caches: Caches,
                action: Any, now: datetime, obs: Observation | None = None) -> None:
    ns = canary.namespace
    tracked = obs.tracked_configs if obs is not None else None
    if isinstance(action, Initialize):
        target = await _deployment(deps, caches, ns, canary.spec.target_ref.name)
        if target is None:
            return
        copies = await _config_copies(deps, canary, caches, target, tracked, init=True)
        await deps.workloads.initialize(canary, target, revision=(obs.revision if obs else None) or None,
                                        config_copies=copies)
        if deps.autoscalers is not None:
            await deps.autoscalers.reconcile(canary, init=True)
        if action.routes:
            await router.reconcile(canary)
    elif isinstance(action, SetRoutes):
        await router.set_routes(canary, Routes(action.primary, action.canary, action.mirror))
    elif isinstance(action, ScaleTarget):
        target = await _deployment(deps, caches, ns, canary.spec.target_ref.name)
        if target is not None:
            await deps.workloads.scale_target(canary, target, up=action.up)
    elif isinstance(action, Promote):
        await _promote(deps, canary, caches, action)
    elif isinstance(action, Event):
        await deps.events.emit(dict(obj), action.type, action.reason, action.message, now)
        if deps.event_webhook or (canary.spec.analysis and canary.spec.analysis.webhooks_of("event")):
            status = canary.status or CanaryStatus()
            _post_in_background(webhooks.send_event(canary, action.message, action.type, status.phase.value,
                                                    status.last_applied_spec or "", default_url=deps.event_webhook),
                                f"{ns}/{canary.name}")
    elif isinstance(action, Alert):
        if deps.on_alert is not None:
            await deps.on_alert(canary, action)
        else:
            log.info("alert %s for %s/%s: %s", action.severity, ns, canary.name, action.message)
    elif isinstance(action, CallWebhooks):
        call = deps.call_webhooks or webhooks.call_webhooks
        await call(canary, action.type, action.phase,
                   (canary.status.last_applied_spec or "") if canary.status else "", stop_early=False)
    else:  # pragma: no cover - the engine only emits the types above
        raise TypeError(f"unknown action {action!r}")


