"""The primary Deployment (pure builders) and `Workloads`, the applier of the workload side:
it creates the primary, promotes into it and hands traffic back on deletion; Services and
scaling are written through adapters/workload/services.py and scaling.py."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload.common import (
    _COPIED_SPEC_FIELDS,
    _NOT_COPIED_ANNOTATIONS,
    REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    SELECTOR_LABELS,
    WorkloadError,
    _rename_config_refs,
    _rename_pod_selectors,
    as_canary,
    check_target,
    config_renames,
    foreign_controller,
    is_owned_by,
    owner_references,
    primary_name,
    selector_label,
    without_flux_keys,
)
from canary.adapters.workload.scaling import _replicas_of, recorded_replicas, scale_target
from canary.adapters.workload.services import apply_service, build_services, revert_apex
from canary.models import Canary
from canary.readiness import deployment_readiness
from canary.revision import template_hash
from canary.types import Readiness


def primary_template(canary: Canary, target: Mapping[str, Any], revision: str, *,
                     selector_labels: Iterable[str] = SELECTOR_LABELS,
                     tracked_configs: Iterable[str] = (),
                     config_copies: Mapping[str, str] | None = None) -> dict:
    """The target's pod template as the primary must run it.

    Config refs are renamed: keys of `config_copies` to its values, other `tracked_configs`
    keys to Flagger's `<name>-primary`.
    """
    label, value = selector_label(target, selector_labels)
    template = copy.deepcopy((target.get("spec") or {}).get("template") or {})
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), label: f"{value}-primary"}
    meta["annotations"] = {**without_flux_keys(meta.get("annotations")), REVISION_ANNOTATION: revision}
    pod_spec = template.setdefault("spec", {})
    _rename_config_refs(pod_spec, config_renames(tracked_configs, config_copies))
    _rename_pod_selectors(pod_spec, {value, canary.spec.target_ref.name})
    return template


def build_primary_deployment(canary: Canary, target: Mapping[str, Any], revision: str, *,
                             replicas: int | None = None,
                             selector_labels: Iterable[str] = SELECTOR_LABELS,
                             tracked_configs: Iterable[str] = (),
                             config_copies: Mapping[str, str] | None = None) -> dict:
    """`<target>-primary`: the target with the selector label rewritten to `<value>-primary`.

    replicas: explicit count; by default the target's (its recorded count when it was scaled to
    zero, 1 if none), or left out when an autoscaler owns the replica count.
    """
    canary = as_canary(canary)
    label, value = selector_label(target, selector_labels)
    tmeta = target.get("metadata") or {}
    tspec = target.get("spec") or {}
    annotations = {k: v for k, v in without_flux_keys(tmeta.get("annotations")).items()
                   if k not in _NOT_COPIED_ANNOTATIONS and k != REPLICAS_ANNOTATION}
    meta: dict[str, Any] = {
        "name": primary_name(canary),
        "namespace": canary.namespace,  # never the fetched object's: we write only there
        "labels": {label: f"{value}-primary"},
    }
    if annotations:
        meta["annotations"] = annotations
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    spec: dict[str, Any] = {}
    if replicas is None and canary.spec.autoscaler_ref is None:
        replicas = _replicas_of(target) or recorded_replicas(target) or 1
    if replicas is not None:
        spec["replicas"] = replicas
    for field in _COPIED_SPEC_FIELDS:
        if tspec.get(field) is not None:
            spec[field] = copy.deepcopy(tspec[field])
    spec["selector"] = {"matchLabels": {label: f"{value}-primary"}}
    spec["template"] = primary_template(canary, target, revision, selector_labels=selector_labels,
                                        tracked_configs=tracked_configs, config_copies=config_copies)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def _deployment_ready(dep: Mapping[str, Any]) -> bool:
    """Ready to take over live traffic (all replicas of the observed rollout available)."""
    return deployment_readiness(dict(dep), datetime.now(timezone.utc), zero_replicas_ready=False).ready


# ---- applier -----------------------------------------------------------------------------------
class Workloads:
    """Applies the workload side of a canary: primary Deployment, Services, scaling, promotion."""

    def __init__(self, kube: Kube, *, selector_labels: Iterable[str] = SELECTOR_LABELS):
        self.kube = kube
        self.selector_labels = tuple(selector_labels)

    async def _get_deployment(self, namespace: str, name: str) -> dict | None:
        return await self.kube.get("apps/v1", "deployments", namespace, name)

    async def initialize(self, canary: Canary, target: Mapping[str, Any], *, revision: str | None = None,
                         tracked_configs: Iterable[str] = (),
                         config_copies: Mapping[str, str] | None = None) -> None:
        """Create the primary if missing, then the Services.

        An existing primary is left alone (a new template reaches it only through `promote`).
        The apex Service is created pointing at the primary; a pre-existing apex Service that we
        do not own is taken over only once the primary is ready, so live traffic is never sent to
        pods that cannot serve it.
        """
        canary = as_canary(canary)
        if canary.spec.target_ref.kind != "Deployment":
            raise WorkloadError(f"canary {canary.name}: targetRef.kind {canary.spec.target_ref.kind} "
                                "is not supported (only Deployment)")
        ns = canary.namespace
        check_target(canary, target)
        primary = await self._get_deployment(ns, primary_name(canary))
        if primary is not None and not is_owned_by(primary, canary):
            other = foreign_controller(primary, canary) or "nobody (it has no controller)"
            raise WorkloadError(f"canary {canary.name}: deployment {primary_name(canary)} exists and is not "
                                f"controlled by this Canary (controller: {other}); it is left alone: rename or "
                                "delete it, or target another Deployment")
        if primary is None:
            if revision is None:
                revision = template_hash((target.get("spec") or {}).get("template") or {})
            replicas = _replicas_of(target) or recorded_replicas(target) or 1
            body = build_primary_deployment(canary, target, revision, replicas=replicas,
                                            selector_labels=self.selector_labels,
                                            tracked_configs=tracked_configs, config_copies=config_copies)
            primary = await self.kube.create("apps/v1", "deployments", ns, body)
        await self.reconcile_services(canary, target, primary_ready=_deployment_ready(primary))

    async def reconcile_services(self, canary: Canary, target: Mapping[str, Any], *, primary_ready: bool = True) -> None:
        canary = as_canary(canary)
        apex, primary_svc, canary_svc = build_services(canary, target, selector_labels=self.selector_labels)
        for desired in (primary_svc, canary_svc, apex):
            await self._apply_service(canary, desired, allow_takeover=primary_ready)

    async def _apply_service(self, canary: Canary, desired: dict, *, allow_takeover: bool) -> None:
        await apply_service(self.kube, canary, desired, allow_takeover=allow_takeover)

    async def scale_target(self, canary: Canary, target: Mapping[str, Any], up: bool) -> Mapping[str, Any]:
        """Scale the target to zero (recording its replicas first) or back up.

        Returns the target as written (or as given when nothing had to change)."""
        return await scale_target(self.kube, canary, target, up)

    async def promote(self, canary: Canary, target: Mapping[str, Any], revision: str, *,
                      tracked_configs: Iterable[str] = (),
                      config_copies: Mapping[str, str] | None = None) -> None:
        """Copy the target's pod template and rollout settings into the primary.

        With an autoscalerRef the primary keeps its current replica count (the HPA owns it);
        Flagger drops it to the HPA minimum here (#1600)."""
        canary = as_canary(canary)
        ns = canary.namespace  # write only to the Canary's namespace
        name = primary_name(canary)
        refused: tuple[Any, ApiError] | None = None  # (the generation tested, the 422) of the last try
        for _ in range(3):
            primary = await self._get_deployment(ns, name)
            if primary is None:
                raise WorkloadError(f"deployment {ns}/{name} does not exist; initialize first")
            if refused is not None and (primary.get("metadata") or {}).get("generation") == refused[0]:
                # the spec had not changed: the 422 was not the failed `test`, but a refusal
                raise refused[1]
            current = _replicas_of(primary)
            if canary.spec.autoscaler_ref is not None:
                replicas = current  # the HPA decides; do not drop to its minimum (Flagger #1600)
            else:
                replicas = _replicas_of(target) or recorded_replicas(target) or current or 1
            desired = build_primary_deployment(canary, target, revision, replicas=replicas,
                                               selector_labels=self.selector_labels,
                                               tracked_configs=tracked_configs, config_copies=config_copies)
            spec = copy.deepcopy(primary["spec"])
            for field in ("replicas", *_COPIED_SPEC_FIELDS, "template"):
                if field in desired["spec"]:
                    spec[field] = desired["spec"][field]
                elif field != "replicas":
                    spec.pop(field, None)
            if spec == primary["spec"]:
                return
            # the spec as a whole, on the condition that it is the spec just read: the generation
            # moves with the spec only, so the controller's status writes (every pod that comes
            # up) do not conflict as a PUT on the resourceVersion did
            generation = (primary.get("metadata") or {}).get("generation")
            ops: list[dict[str, Any]] = [{"op": "replace", "path": "/spec", "value": spec}]
            if generation is not None:
                ops.insert(0, {"op": "test", "path": "/metadata/generation", "value": generation})
            try:
                await self.kube.patch("apps/v1", "deployments", ns, name, ops, kind="json")
                return
            except ApiError as e:
                # a failed `test` is a 422 whose message says nothing more (1.20: "the server
                # rejected our request due to an error in our request"): read again, and tell it
                # from a real refusal by whether the generation moved
                if e.status == 422 and generation is not None:
                    refused = (generation, e)
                elif not e.conflict:
                    raise
        raise ApiError(409, "Conflict", f"deployment {ns}/{name} kept changing while being promoted")

    async def finalize(self, canary: Canary, target: Mapping[str, Any], *, force: bool = False,
                       now: datetime | None = None) -> "FinalizeResult":
        """revertOnDeletion: hand the traffic back to the target before the Canary goes away.

        1. The target gets the primary's replicas (its recorded count, else 1, when the primary
           is gone) and loses our `canary.dev/replicas` annotation.
        2. Until the target is ready (and unless `force`), nothing else changes: the result says
           `done=False` with the target's readiness, and the caller calls again later (with the
           target as its watch now sees it). Waiting, and how long, is the caller's job.
        3. The apex Service selects the target's pods again: its recorded selector and ports if
           we took it over, else `{<label>: <value>}`; our annotation and owner reference are
           removed so that garbage collection of the Canary leaves it in place.

        Everything else we made (primary Deployment, `-primary`/`-canary` Services, config
        copies, primary HPA) is owned by the Canary and collected with it. Idempotent.
        """
        canary = as_canary(canary)
        now = now or datetime.now(timezone.utc)
        meta = target.get("metadata") or {}
        ns, name = canary.namespace, canary.spec.target_ref.name
        label, value = selector_label(target, self.selector_labels)
        primary = await self._get_deployment(ns, primary_name(canary))
        want = _replicas_of(primary) or recorded_replicas(target) or _replicas_of(target) or 1
        annotations = meta.get("annotations") or {}
        if _replicas_of(target) != want or REPLICAS_ANNOTATION in annotations:
            patch: dict[str, Any] = {"spec": {"replicas": want}}
            if REPLICAS_ANNOTATION in annotations:
                patch["metadata"] = {"annotations": {REPLICAS_ANNOTATION: None}}
            target = await self.kube.patch("apps/v1", "deployments", ns, name, patch)
        readiness = deployment_readiness(dict(target), now, zero_replicas_ready=False)
        if not readiness.ready and not force:
            return FinalizeResult(False, readiness, want)
        await self._revert_apex(canary, ns, label, value)
        return FinalizeResult(True, readiness, want)

    async def revert(self, canary: Canary, target: Mapping[str, Any]) -> "FinalizeResult":
        """`finalize` without waiting for the target to be ready."""
        return await self.finalize(canary, target, force=True)

    async def _revert_apex(self, canary: Canary, ns: str, label: str, value: str) -> None:
        await revert_apex(self.kube, canary, ns, label, value)


@dataclass(frozen=True)
class FinalizeResult:
    """What `Workloads.finalize` achieved."""

    done: bool  # the apex Service selects the target's pods and will survive the Canary
    target: Readiness  # the target's readiness as last seen
    replicas: int  # the replica count the target was given
