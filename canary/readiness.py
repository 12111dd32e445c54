"""Readiness of a Deployment, computed from the object alone (pure, no I/O).

The rules follow what Flagger checks before it moves on (a rollout must be observed, fully
updated, old pods gone and enough updated pods available), in this order:

1. ``metadata.generation > status.observedGeneration``: the controller has not seen the
   latest spec yet -> WAITING.
2. Condition ``Progressing`` with reason ``ProgressDeadlineExceeded`` (the Deployment's own
   ``spec.progressDeadlineSeconds``) -> FAILED.
3. Condition ``Available=False`` with reason ``MinimumReplicasUnavailable`` whose
   ``lastUpdateTime`` is older than ``deadline_seconds`` (the Canary's progress deadline)
   -> FAILED.
4. ``spec.replicas == 0``: nothing to wait for. A scaled-down *target* counts as READY (the
   engine scales it up before it relies on it, and checks ``replicas`` itself); a *primary*
   with zero replicas cannot serve, so it is WAITING (the progress deadline then turns it
   into a failure). Pass ``zero_replicas_ready=False`` for the primary.
5. ``status.updatedReplicas < spec.replicas`` -> WAITING (rollout in progress).
6. ``status.replicas > status.updatedReplicas`` -> WAITING (old pods pending termination).
7. ``status.availableReplicas < updatedReplicas * ready_threshold_percent / 100`` (rounded
   down) -> WAITING, e.g. "0 of 1 (readyThreshold 100%) updated replicas are available".
8. Otherwise READY.

A missing ``spec.replicas`` means 1, as the API server defaults it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from canary.types import Readiness, Ready


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def unavailable_for(dep: Mapping[str, Any] | None, now: datetime, seconds: float) -> bool:
    """The Deployment's Available condition has been False for at least `seconds` (an
    unreadable transition time counts as long enough)."""
    cond = _condition(dict((dep or {}).get("status") or {}), "Available")
    if cond is None or cond.get("status") != "False":
        return False
    since = _parse_time(cond.get("lastTransitionTime"))
    return since is None or (now - since).total_seconds() >= seconds


def deployment_readiness(
    deployment: dict[str, Any],
    now: datetime,
    ready_threshold_percent: int = 100,
    deadline_seconds: int = 600,
    *,
    zero_replicas_ready: bool = True,
) -> Readiness:
    """Readiness of one Deployment object (as returned by the API server)."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name", "deployment")

    generation = _int(metadata.get("generation"))
    observed = _int(status.get("observedGeneration"))
    if generation > observed:
        return Readiness(
            Ready.WAITING,
            f"waiting for rollout to be observed: generation {generation}, observed {observed}",
        )

    progressing = _condition(status, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = progressing.get("message") or "progress deadline exceeded"
        return Readiness(Ready.FAILED, f"{name}: {detail}")

    available = _condition(status, "Available")
    if (
        available
        and available.get("status") == "False"
        and available.get("reason") == "MinimumReplicasUnavailable"
    ):
        since = _parse_time(available.get("lastUpdateTime"))
        if since is not None and since + timedelta(seconds=deadline_seconds) < now:
            return Readiness(
                Ready.FAILED,
                f"{name}: minimum replicas unavailable for more than {deadline_seconds}s",
            )

    replicas = _int(spec.get("replicas"), 1)
    if replicas == 0:
        if zero_replicas_ready:
            return Readiness(Ready.READY, "scaled to zero")
        return Readiness(Ready.WAITING, f"{name} is scaled to zero")

    updated = _int(status.get("updatedReplicas"))
    if updated < replicas:
        return Readiness(
            Ready.WAITING,
            f"waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated",
        )

    current = _int(status.get("replicas"))
    if current > updated:
        return Readiness(
            Ready.WAITING,
            f"waiting for rollout to finish: {current - updated} old replicas are pending termination",
        )

    needed = updated * _int(ready_threshold_percent, 100) // 100
    available_replicas = _int(status.get("availableReplicas"))
    if available_replicas < needed:
        return Readiness(
            Ready.WAITING,
            f"waiting for rollout to finish: {available_replicas} of {needed} "
            f"(readyThreshold {ready_threshold_percent}%) updated replicas are available",
        )
    return Readiness(Ready.READY, f"{available_replicas} of {replicas} replicas available")
