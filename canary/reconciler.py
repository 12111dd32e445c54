"""One tick of one Canary: observe, decide, write the decision, then act on it.

This is the only place where the pure engine meets I/O. Its crash-safety contract (see
docs/design.md, "Crash safety"):

1. **Observe** from the watch caches (a cache miss is read through with a GET, so a cold cache
   after a restart is never taken for a missing object), and run exactly the checks the engine
   asks for.
2. **Decide**: `engine.step` returns the next status, the effects (Initialize, SetRoutes,
   ScaleTarget, Promote) and the notifications (Events, alerts, notify webhooks).
3. **Write the intent**: the status is written *before* any effect, conditionally on the
   resourceVersion the tick read (a replica that lost its Lease, or an older copy of the Canary,
   gets a 409 and acts on nothing). A tick that stops after this write is completed by the next
   one: the engine compares the status with what the API server shows (routes, the primary's
   revision, the target's scale) and emits again whatever is not done. Every effect is
   idempotent.
4. **Apply the effects** in order. A Promote copies the target only if its template (and
   tracked configs) is still exactly the revision that was analysed.
5. **Notify** (events, alerts, post-rollout webhooks): only for a decision that was written.
6. **Clear** decided command annotations with a merge patch carrying the resourceVersion just
   written (a conflict leaves the annotation; its id is recorded in status, so it is only cleared
   the next time, never acted on twice).

A tick whose status did not change writes nothing; if it still has effects (completing an
earlier intent), it first confirms with a GET that the Canary is still there, unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Mapping

from pydantic import ValidationError

from canary import engine, security
from canary.adapters.kube import ApiError, InvalidName, Kube
from canary.adapters.workload import WorkloadError
from canary.cluster import (  # noqa: F401  (re-exported: the reconciler's public face)
    RETRY_AFTER_ERROR,
    Caches,
    Deps,
    Gone,
    StaleRevision,
    _interval,
    _secret_lookup,
    _template_lookup,
    apply,
    observe,
    primary_revision_of,
    run_checks,
    timed,
)
from canary.models import Canary, CanaryStatus, Condition
from canary.routers.base import Router, RouterError
from canary.types import EFFECTS, Initialize

log = logging.getLogger("canary.reconciler")

RETRY_AFTER_CONFLICT = 0.2  # our copy of the Canary was old: start again from the newer one
INVALID_RECHECK = 60.0


def status_of(obj: Mapping[str, Any]) -> CanaryStatus | None:
    """The Canary's status; None when it does not validate (it is then never replaced by a blank
    one: a blank status would re-initialize and record the running revision as promoted)."""
    raw = obj.get("status") or {}
    try:
        return CanaryStatus.model_validate(raw)
    except ValidationError:
        return None


async def write_status(kube: Kube, canary_obj: Mapping[str, Any], old: CanaryStatus,
                       new: CanaryStatus) -> dict | None:
    """Patch the status subresource if, and only if, it changed; return the object as written.

    The patch carries the resourceVersion the tick read: if the Canary changed since (another
    replica acted, a user edited it), the API server answers 409 and nothing is written."""
    if new == old or new.dump() == old.dump():  # (==: cheap when the ledger entries are shared)
        return None
    meta = canary_obj["metadata"]
    previous = canary_obj.get("status")
    body: dict[str, Any] = {"status": new.to_patch(previous if isinstance(previous, Mapping) else None)}
    if meta.get("resourceVersion"):
        body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    return await kube.patch(
        "canary.dev/v1beta1",
        "canaries",
        meta["namespace"],
        meta["name"],
        body,
        subresource="status",
    )


async def report_invalid(deps: Deps, obj: Mapping[str, Any], message: str) -> dict | None:
    """Bad input: a status condition and a Warning event, never a change to traffic."""
    old = status_of(obj)
    if old is None:
        return None
    new = old.model_copy(deep=True)
    now = deps.clock()
    cond = Condition(type="Valid", status="False", reason="InvalidSpec", message=message,
                     last_update_time=now, last_transition_time=now)
    prev = old.condition("Valid")
    if prev and prev.status == "False" and prev.message == message:
        return None  # already reported
    new.conditions = [c for c in new.conditions if c.type != "Valid"] + [cond]
    await _notify(deps.events.emit(dict(obj), "Warning", "InvalidSpec", message, now))
    try:
        return await write_status(deps.kube, obj, old, new)
    except ApiError as e:
        log.warning("could not write status: %s", e)
        return None


async def report_bad_status(deps: Deps, obj: Mapping[str, Any]) -> None:
    """A status that does not validate: say so (a Warning event, once per resourceVersion) and
    act on nothing until a person fixes or removes it."""
    meta = obj.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    if deps.bad_status_reported.get(key) == meta.get("resourceVersion"):
        return
    deps.bad_status_reported[key] = meta.get("resourceVersion")
    message = ("status does not validate; the operator acts on nothing until it is fixed or removed "
               "(kubectl patch --subresource=status)")
    log.error("%s/%s: %s", key[0], key[1], message)
    await _notify(deps.events.emit(dict(obj), "Warning", "InvalidStatus", message, deps.clock()))


async def _notify(coro: Awaitable[Any]) -> None:
    """A notification never fails a tick whose decision is already written."""
    try:
        await coro
    except Exception as e:  # noqa: BLE001 - events and alerts are best effort
        log.warning("notification failed: %s", e)


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


@dataclass(frozen=True)
class TickResult:
    wake_after: float
    written: dict | None = None  # the Canary as our status patch left it (newer than the watch's copy)
    gone: bool = False  # the Canary is gone (or is another object now): stop its loop


async def _confirm(deps: Deps, obj: Mapping[str, Any]) -> dict:
    """Before effects that no status write of this tick fenced: the Canary is still there, the
    same object, not being deleted, and unchanged since it was read."""
    meta = obj.get("metadata") or {}
    fresh = await deps.kube.get("canary.dev/v1beta1", "canaries", meta.get("namespace"), meta.get("name"))
    fmeta = (fresh or {}).get("metadata") or {}
    if fresh is None or fmeta.get("uid") != meta.get("uid") or fmeta.get("deletionTimestamp"):
        raise Gone(f"canary {meta.get('namespace')}/{meta.get('name')} is gone or being deleted")
    if fmeta.get("resourceVersion") != meta.get("resourceVersion"):
        raise ApiError(409, "Conflict", "the Canary changed since it was read")
    return fresh


async def _decide(deps: Deps, canary: Canary, obj: Mapping[str, Any], status: CanaryStatus, router: Router,
                  caches: Caches, now: datetime):
    gen = (obj.get("metadata") or {}).get("generation")
    if (gen is not None and status.observed_generation != int(gen) and not canary.spec.suspend
            and status.phase.value not in ("", "Initializing")):
        # the spec changed (or we restarted): bring Services and routes in line, weights kept
        await apply(deps, canary, obj, router, caches, Initialize(), now)
    with timed(deps, "observe"):
        obs = await observe(deps, canary, caches, router, now)
    obs = await run_checks(deps, canary, status, obs, caches)
    decision = engine.step(canary, status, obs)
    new = decision.status
    _clear_invalid(new)
    if hasattr(router, "status_problem"):
        _route_condition(new, await router.status_problem(canary), now)
    if gen is not None:
        new.observed_generation = int(gen)
    return obs, decision, new


async def reconcile(deps: Deps, obj: Mapping[str, Any], caches: Caches) -> TickResult:
    """Run one tick for the Canary `obj` (a full object as the watch delivered it).

    Returns when the Canary wants its next tick, and the object as written if the status
    changed: the next tick must start from that, never from an older copy, or it would
    decide the same transition twice.
    """
    now = deps.clock()
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return TickResult(INVALID_RECHECK)  # being deleted: only the revert handler (or GC) acts
    status = status_of(obj)
    if status is None:
        await report_bad_status(deps, obj)
        return TickResult(INVALID_RECHECK)
    try:
        canary = Canary.from_obj(dict(obj))
    except ValidationError as e:
        return TickResult(INVALID_RECHECK, await report_invalid(deps, obj, _validation_message(e)))
    refused = security.refusal(canary)  # the operator's policy (--no-cross-namespace-refs)
    rivals = deps.rivals(canary) if deps.rivals is not None else []
    if rivals and not refused:
        refused = (f"Deployment {canary.namespace}/{canary.spec.target_ref.name} is already the target of "
                   f"Canary {rivals[0]}: one Deployment has one Canary (a second one would promote past "
                   "the first one's analysis); this Canary acts on nothing")
    if refused:
        return TickResult(INVALID_RECHECK, await report_invalid(deps, obj, refused))
    router = deps.router_for(canary)
    where = f"{canary.namespace}/{canary.name}"
    # 1-2. observe and decide (nothing is changed yet but idempotent object upkeep)
    try:
        obs, decision, new = await _decide(deps, canary, obj, status, router, caches, now)
    except (WorkloadError, RouterError, InvalidName) as e:
        # the spec cannot be realised as written: say so, touch nothing else
        return TickResult(max(RETRY_AFTER_ERROR, _interval(canary)), await report_invalid(deps, obj, str(e)))
    except ApiError as e:
        log.error("tick of %s failed: %s", where, e)
        await _notify(deps.events.emit(dict(obj), "Warning", "ApiError", str(e), now))
        return TickResult(RETRY_AFTER_ERROR)
    effects = [a for a in decision.actions if isinstance(a, EFFECTS)]
    notes = [a for a in decision.actions if not isinstance(a, EFFECTS)]
    # 3. the decision is on the API server before any of its effects (write-ahead intent)
    try:
        with timed(deps, "status"):
            written = await write_status(deps.kube, obj, status, new)
    except ApiError as e:
        if e.status == 404:
            return TickResult(RETRY_AFTER_ERROR, gone=True)
        if e.status == 409:
            log.info("status of %s not written, the Canary changed meanwhile: deciding again", where)
            return TickResult(RETRY_AFTER_CONFLICT)
        log.error("status write failed for %s: %s", where, e)
        return TickResult(RETRY_AFTER_ERROR)
    if deps.on_decision is not None and written is not None:
        deps.on_decision(canary, new)
    base = written or obj
    # 4. the effects; whatever is not done is emitted again by the next tick
    try:
        with timed(deps, "effects"):
            if written is None and effects:
                await _confirm(deps, obj)
            for action in effects:
                await apply(deps, canary, base, router, caches, action, now, obs)
    except Gone as e:
        log.info("%s", e)
        return TickResult(RETRY_AFTER_ERROR, written, gone=True)
    except StaleRevision as e:
        log.warning("%s: %s", where, e)
        return TickResult(RETRY_AFTER_CONFLICT, written)
    except (WorkloadError, RouterError, InvalidName) as e:
        written = await _tell_routed(deps, canary, router, written, new) or written
        return TickResult(max(RETRY_AFTER_ERROR, _interval(canary)),
                          await report_invalid(deps, written or base, str(e)) or written)
    except ApiError as e:
        if e.status == 409:
            return TickResult(RETRY_AFTER_CONFLICT, written)
        log.error("tick of %s failed after its decision was written (the next tick completes it): %s", where, e)
        written = await _tell_routed(deps, canary, router, written, new) or written
        await _notify(deps.events.emit(dict(base), "Warning", "ApiError", str(e), now))
        return TickResult(RETRY_AFTER_ERROR, written)
    # 5. tell people, only about a decision that was written
    if written is not None and notes:
        with timed(deps, "notify"):
            for action in notes:
                await _notify(apply(deps, canary, base, router, caches, action, now, obs))
    # 6. clear the decided command annotations
    if decision.clear:
        cleared = await clear_commands(deps.kube, base, decision.clear)
        written = cleared or written
    return TickResult(decision.wake_after, written)


async def _tell_routed(deps: Deps, canary: Canary, router: Router, written: dict | None,
                       new: CanaryStatus) -> dict | None:
    """An effect failed after its decision was written: status.canaryWeight goes back to the
    weight really routed (I6), while status.intent keeps what the decision asked, for the next
    tick to complete."""
    if written is None:
        return None
    try:
        routes = await router.get_routes(canary)
    except Exception:  # noqa: BLE001 - best effort; the next tick tells the truth anyway
        return None
    routed = routes.canary if routes is not None else 0
    if routed == new.canary_weight:
        return None
    meta = written.get("metadata") or {}
    try:
        return await deps.kube.patch("canary.dev/v1beta1", "canaries", canary.namespace, canary.name,
                                     {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                      "status": {"canaryWeight": routed}}, subresource="status")
    except ApiError:
        return None


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
