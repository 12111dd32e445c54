"""The primary's HorizontalPodAutoscaler (`spec.autoscalerRef` of kind HorizontalPodAutoscaler).

`<hpa>-primary` scales `<target>-primary` with the target HPA's bounds, metrics and behavior
(`primaryScalerReplicas` overrides the bounds). As in Flagger it is created at initialization
and changed only on promotion: a change to the target's HPA is part of the next release and is
tested with it, never applied to the primary on its own (Flagger #591, #1308). The target's HPA
is never written: while the target is scaled to zero the HPA controller leaves it alone
("scaling is disabled since the replica count of the target is zero") and it takes over again
when the target is scaled up for an analysis.

The HPA API version is discovered: autoscaling/v2 (Kubernetes >= 1.23), else autoscaling/v2beta2
(1.12 - 1.25). The version written in `autoscalerRef.apiVersion` only names the object; it is
read and written at the served version (the API server converts). `build_primary_hpa` accepts
a source HPA in any version (v1, v2beta1, v2beta2, v2) and writes the requested one.

KEDA ScaledObjects (`kind: ScaledObject`) are out of scope: `Autoscalers.reconcile` raises
AutoscalerError for them, so the Canary is reported instead of running without a scaler.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload import (
    CANARY_KIND,
    WorkloadError,
    as_canary,
    owner_references,
    primary_name,
    without_flux_keys,
)
from canary.models import Canary

HPA_GROUP = "autoscaling"
HPA_VERSIONS = ("v2", "v2beta2")  # in order of preference; both have the same shape
HPA_PLURAL = "horizontalpodautoscalers"
_SPEC_FIELDS = ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior")
_V2_ONLY_RULE_FIELDS = ("tolerance",)  # HPAScalingRules fields v2beta2 does not have


class AutoscalerError(WorkloadError):
    """The autoscalerRef cannot be honoured (kind not supported, HPA missing, bad bounds)."""


def primary_hpa_name(canary: Canary) -> str:
    ref = canary.spec.autoscaler_ref
    if ref is None:
        raise AutoscalerError(f"canary {canary.name} has no autoscalerRef")
    return f"{ref.name}-primary"


# ---- version conversion (pure) -------------------------------------------------------------


def _target(utilization: Any = None, average: Any = None, value: Any = None) -> dict:
    if utilization is not None:
        return {"type": "Utilization", "averageUtilization": utilization}
    if average is not None:
        return {"type": "AverageValue", "averageValue": average}
    return {"type": "Value", "value": value}


def _metric_from_v2beta1(m: Mapping[str, Any]) -> dict:
    kind = m.get("type")
    if kind == "Resource":
        r = m.get("resource") or {}
        return {"type": kind, "resource": {
            "name": r.get("name"),
            "target": _target(r.get("targetAverageUtilization"), r.get("targetAverageValue"))}}
    if kind == "ContainerResource":
        r = m.get("containerResource") or {}
        return {"type": kind, "containerResource": {
            "name": r.get("name"), "container": r.get("container"),
            "target": _target(r.get("targetAverageUtilization"), r.get("targetAverageValue"))}}
    if kind == "Pods":
        p = m.get("pods") or {}
        metric = {"name": p.get("metricName")}
        if p.get("selector"):
            metric["selector"] = p["selector"]
        return {"type": kind, "pods": {"metric": metric, "target": _target(average=p.get("targetAverageValue"))}}
    if kind == "Object":
        o = m.get("object") or {}
        metric = {"name": o.get("metricName")}
        if o.get("selector"):
            metric["selector"] = o["selector"]
        return {"type": kind, "object": {
            "describedObject": o.get("target"), "metric": metric,
            "target": _target(average=o.get("averageValue"), value=o.get("targetValue"))}}
    if kind == "External":
        e = m.get("external") or {}
        metric = {"name": e.get("metricName")}
        if e.get("metricSelector"):
            metric["selector"] = e["metricSelector"]
        return {"type": kind, "external": {
            "metric": metric, "target": _target(average=e.get("targetAverageValue"), value=e.get("targetValue"))}}
    return copy.deepcopy(dict(m))


def hpa_spec_as(spec: Mapping[str, Any], from_version: str, to_version: str) -> dict:
    """An HPA spec of `from_version` (v1, v2beta1, v2beta2, v2) in the shape of `to_version`
    (v2 or v2beta2)."""
    if to_version not in HPA_VERSIONS:
        raise AutoscalerError(f"cannot write HorizontalPodAutoscaler {HPA_GROUP}/{to_version}")
    spec = copy.deepcopy(dict(spec))
    if from_version == "v1":
        cpu = spec.pop("targetCPUUtilizationPercentage", None)
        if cpu is not None:
            spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": _target(cpu)}}]
    elif from_version == "v2beta1":
        spec["metrics"] = [_metric_from_v2beta1(m) for m in spec.get("metrics") or []]
        if not spec["metrics"]:
            spec.pop("metrics")
    if to_version == "v2beta2" and spec.get("behavior"):
        for direction in ("scaleUp", "scaleDown"):
            rules = spec["behavior"].get(direction)
            for field in _V2_ONLY_RULE_FIELDS:
                if isinstance(rules, dict):
                    rules.pop(field, None)
    return spec


# ---- builder (pure) ------------------------------------------------------------------------------


def build_primary_hpa(canary: Canary | Mapping[str, Any], target_hpa: Mapping[str, Any], api_version: str) -> dict:
    """`<hpa>-primary` for `<target>-primary`, written as `api_version` ("autoscaling/v2" or
    "autoscaling/v2beta2")."""
    canary = as_canary(canary)
    to_version = api_version.split("/")[-1]
    from_version = str(target_hpa.get("apiVersion") or api_version).split("/")[-1]
    src_meta = target_hpa.get("metadata") or {}
    src = hpa_spec_as(target_hpa.get("spec") or {}, from_version, to_version)
    spec: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                               "name": primary_name(canary)}}
    for field in ("minReplicas", "maxReplicas", "metrics", "behavior"):
        if src.get(field) is not None:
            spec[field] = src[field]
    override = canary.spec.autoscaler_ref.primary_scaler_replicas if canary.spec.autoscaler_ref else None
    if override is not None:
        if override.min_replicas is not None:
            spec["minReplicas"] = override.min_replicas
        if override.max_replicas is not None:
            spec["maxReplicas"] = override.max_replicas
    if "maxReplicas" not in spec:
        raise AutoscalerError(f"HorizontalPodAutoscaler {src_meta.get('name')} has no maxReplicas")
    if spec.get("minReplicas", 1) > spec["maxReplicas"]:
        raise AutoscalerError(f"primary HPA: minReplicas {spec['minReplicas']} is greater than "
                              f"maxReplicas {spec['maxReplicas']} (check primaryScalerReplicas)")
    meta: dict[str, Any] = {"name": primary_hpa_name(canary),
                            "namespace": canary.namespace}  # never the fetched object's
    labels = without_flux_keys(src_meta.get("labels"))
    if labels:
        meta["labels"] = labels
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": f"{HPA_GROUP}/{to_version}", "kind": "HorizontalPodAutoscaler",
            "metadata": meta, "spec": spec}


def _spec_differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    es, ds = existing.get("spec") or {}, desired.get("spec") or {}
    for field in _SPEC_FIELDS:
        have, want = es.get(field), ds.get(field)
        if field == "minReplicas":  # the API server defaults it to 1
            have, want = have or 1, want or 1
        if have != want:
            return True
    return False


def _foreign(existing: Mapping[str, Any], canary: Canary) -> bool:
    """Controlled by something other than a Canary of this name (a Flagger one is adopted)."""
    for ref in (existing.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return not (ref.get("kind") == CANARY_KIND and ref.get("name") == canary.name)
    return False


# ---- applier -------------------------------------------------------------------------------------


class Autoscalers:
    """Creates (at initialization) and updates (on promotion) the primary HPA."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self._api_version: str | None = None

    async def api_version(self) -> str:
        """"autoscaling/v2" or "autoscaling/v2beta2", whichever the server serves (v2 first)."""
        if self._api_version is None:
            found = await self.kube.first_served(HPA_GROUP, HPA_VERSIONS)
            if found is None:
                raise AutoscalerError("the API server serves neither autoscaling/v2 nor autoscaling/v2beta2")
            self._api_version = found
        return self._api_version

    async def reconcile(self, canary: Canary | Mapping[str, Any], init: bool, *,
                        target_hpa: Mapping[str, Any] | None = None) -> dict | None:
        """Make sure `<hpa>-primary` exists (init=True), or matches the target HPA (init=False).

        `target_hpa`: the target's HPA if the caller already has it (a watch cache); read from
        the API otherwise. Returns the primary HPA as stored (None without an autoscalerRef).
        """
        canary = as_canary(canary)
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return None
        if ref.kind != "HorizontalPodAutoscaler":
            raise AutoscalerError(f"canary {canary.name}: autoscalerRef.kind {ref.kind} is not supported "
                                  "(only HorizontalPodAutoscaler; KEDA ScaledObjects are not)")
        version = await self.api_version()
        ns = canary.namespace
        if target_hpa is None:
            target_hpa = await self.kube.get(version, HPA_PLURAL, ns, ref.name)
        if target_hpa is None:
            raise AutoscalerError(f"autoscalerRef: HorizontalPodAutoscaler {ns}/{ref.name} not found")
        desired = build_primary_hpa(canary, target_hpa, version)
        name = desired["metadata"]["name"]
        for _ in range(3):
            existing = await self.kube.get(version, HPA_PLURAL, ns, name)
            if existing is None:
                try:
                    return await self.kube.create(version, HPA_PLURAL, ns, desired)
                except ApiError as e:
                    if e.status != 409:
                        raise
                    continue
            if _foreign(existing, canary):
                raise AutoscalerError(f"HorizontalPodAutoscaler {ns}/{name} exists and is not managed "
                                      f"by canary {canary.name}")
            if init:
                return existing  # created at initialization only; changes come with a promotion
            body = copy.deepcopy(existing)
            meta = body["metadata"]
            changed = _spec_differs(existing, desired)
            if changed:
                body["spec"] = desired["spec"]
            want_labels = desired["metadata"].get("labels") or {}
            if (meta.get("labels") or {}) != want_labels:
                meta["labels"] = want_labels
                changed = True
            owners = desired["metadata"].get("ownerReferences")
            if owners and meta.get("ownerReferences") != owners:
                meta["ownerReferences"] = owners
                changed = True
            if not changed:
                return existing
            try:
                return await self.kube.replace(version, HPA_PLURAL, ns, name, body)
            except ApiError as e:
                if e.status != 409:
                    raise
        raise ApiError(409, "Conflict", f"HorizontalPodAutoscaler {ns}/{name} kept changing while being updated")
