"""Scaling the target: to zero after a promotion (recording its replicas) and back up."""

from __future__ import annotations

from typing import Any, Mapping

from canary.adapters.kube import Kube
from canary.adapters.workload.common import REPLICAS_ANNOTATION, as_canary, primary_name
from canary.models import Canary


def _replicas_of(obj: Mapping[str, Any] | None) -> int | None:
    if not obj:
        return None
    value = (obj.get("spec") or {}).get("replicas")
    return None if value is None else int(value)


def recorded_replicas(target: Mapping[str, Any]) -> int | None:
    raw = ((target.get("metadata") or {}).get("annotations") or {}).get(REPLICAS_ANNOTATION)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value and value > 0 else None


async def scale_target(kube: Kube, canary: Canary, target: Mapping[str, Any], up: bool) -> Mapping[str, Any]:
    """Scale the target to zero (recording its replicas first) or back up.

    Returns the target as written (or as given when nothing had to change)."""
    canary = as_canary(canary)
    ns, name = canary.namespace, canary.spec.target_ref.name
    current = _replicas_of(target) or 0
    if up:
        want = recorded_replicas(target)
        if want is None:
            want = _replicas_of(await kube.get("apps/v1", "deployments", ns, primary_name(canary))) or 1
        if current == want:
            return target
        patch: dict[str, Any] = {"spec": {"replicas": want}}
    else:
        if current == 0:
            return target
        patch = {"metadata": {"annotations": {REPLICAS_ANNOTATION: str(current)}},
                 "spec": {"replicas": 0}}
    return await kube.patch("apps/v1", "deployments", ns, name, patch)
