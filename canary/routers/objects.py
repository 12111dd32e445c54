"""Writing routing objects that users may also own: shared by every router.

A routing object we did not create (a VirtualService or HTTPRoute that existed before the
Canary) is taken over: its original spec is kept in an annotation so that `restore` can put it
back when the Canary goes. Writes happen only when the object would change.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Awaitable, Callable

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload import FLUX_DISABLED, foreign_controller, is_owned_by, owner_references
from canary.models import Canary
from canary.routers.base import RouterError

ORIGINAL_ANNOTATION = "canary.dev/original-configuration"


def apex_metadata(canary: Canary, name: str) -> dict[str, Any]:
    """Metadata of the apex routing object (VirtualService, HTTPRoute): `service.apex` labels and
    annotations, Flux's reconcile switched off, owned by the Canary."""
    apex = canary.spec.service.apex if canary.spec.service is not None else None
    meta: dict[str, Any] = {"name": name, "namespace": canary.namespace}
    if apex and apex.labels:
        meta["labels"] = dict(apex.labels)
    meta["annotations"] = {**((apex.annotations if apex else None) or {}), **FLUX_DISABLED}
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    return meta


Read = Callable[[bool], Awaitable["dict | None"]]  # fresh? -> the object (a watch cache when not fresh)


async def upsert(kube: Kube, canary: Canary, api_version: str, plural: str, name: str, read: Read,
                 desired_for: Callable[[dict | None], dict]) -> None:
    """Create the object, or bring the spec (and our annotations and labels) of the existing one
    to `desired_for(existing)`; a conflict re-reads fresh and tries again."""
    for attempt in range(3):
        existing = await read(attempt > 0)
        desired = desired_for(existing)
        if existing is None:
            try:
                await kube.create(api_version, plural, canary.namespace, desired)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
                continue
        body = copy.deepcopy(existing)
        body["apiVersion"] = api_version  # a watch may deliver another served version
        meta = body.setdefault("metadata", {})
        annotations = meta.setdefault("annotations", {})
        owned = is_owned_by(existing, canary)
        other = None if owned else foreign_controller(existing, canary)
        # a route of a Canary of the same name (Flagger's, or a re-created one's) is adopted
        if other and other != f"Canary {canary.name}":
            raise RouterError(f"{plural} {canary.namespace}/{name} is controlled by {other}; it is not taken over")
        if not owned and ORIGINAL_ANNOTATION not in annotations:
            annotations[ORIGINAL_ANNOTATION] = json.dumps(existing.get("spec") or {},
                                                          sort_keys=True, separators=(",", ":"))
        annotations.update(desired["metadata"].get("annotations") or {})
        if owned and desired["metadata"].get("labels"):
            meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
        body["spec"] = desired["spec"]
        if body == {**existing, "apiVersion": api_version}:
            return
        try:
            await kube.replace(api_version, plural, canary.namespace, name, body)
            return
        except ApiError as e:
            if e.status != 409:
                raise
    raise ApiError(409, "Conflict", f"{plural} {canary.namespace}/{name} kept changing while being updated")


async def restore(kube: Kube, api_version: str, plural: str, namespace: str, name: str) -> None:
    """Put a taken-over object back as it was; ours (garbage collected with the Canary) or
    never-touched objects are left alone."""
    for _ in range(3):
        existing = await kube.get(api_version, plural, namespace, name)
        if existing is None:
            return
        annotations = (existing.get("metadata") or {}).get("annotations") or {}
        if ORIGINAL_ANNOTATION not in annotations:
            return
        body = copy.deepcopy(existing)
        body["apiVersion"] = api_version
        body["spec"] = json.loads(annotations[ORIGINAL_ANNOTATION])
        kept = {k: v for k, v in annotations.items() if k != ORIGINAL_ANNOTATION and k not in FLUX_DISABLED}
        if kept:
            body["metadata"]["annotations"] = kept
        else:
            body["metadata"].pop("annotations", None)
        try:
            await kube.replace(api_version, plural, namespace, name, body)
            return
        except ApiError as e:
            if e.status != 409:
                raise
