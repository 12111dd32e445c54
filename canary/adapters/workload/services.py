"""The apex, -primary and -canary Services: pure builders, the comparison with what is in the
cluster, and their writes (create, take over, update only what we own, revert on deletion)."""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload.common import (
    CANARY_KIND,
    FLUX_DISABLED,
    LAST_APPLIED,
    ORIGINAL_SERVICE_ANNOTATION,
    SELECTOR_LABELS,
    SIDECAR_CONTAINERS,
    WorkloadError,
    as_canary,
    foreign_controller,
    is_owned_by,
    owner_references,
    selector_label,
    service_name,
)
from canary.models import Canary


def service_ports(canary: Canary, target: Mapping[str, Any] | None = None) -> list[dict]:
    """The Service ports: service.port first, then (portDiscovery) every other container port."""
    svc = canary.spec.service
    if svc is None:
        raise WorkloadError(f"canary {canary.name}: spec.service is required to generate Services")
    main: dict[str, Any] = {"name": svc.port_name_value, "protocol": "TCP", "port": svc.port,
                            "targetPort": svc.target_port_value}
    if svc.app_protocol:
        main["appProtocol"] = svc.app_protocol
    ports = [main]
    if not svc.port_discovery or not target:
        return ports
    skip = {svc.port}
    if isinstance(svc.target_port_value, int):
        skip.add(svc.target_port_value)
    seen_names = {main["name"]}
    pod_spec = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in pod_spec.get("containers") or []:
        if c.get("name") in SIDECAR_CONTAINERS:
            continue
        for i, p in enumerate(c.get("ports") or []):
            number = p.get("containerPort")
            if number is None or number in skip:
                continue
            name = p.get("name") or f"tcp-{c.get('name')}-{i}"
            if name in seen_names:
                continue
            skip.add(number)
            seen_names.add(name)
            ports.append({"name": name, "protocol": "TCP", "port": number, "targetPort": number})
    return ports


def build_services(canary: Canary, target: Mapping[str, Any], ports: list[dict] | None = None, *,
                   selector_labels: Iterable[str] = SELECTOR_LABELS) -> list[dict]:
    """[apex `<svc>`, `<svc>-primary`, `<svc>-canary`] as Flagger generates them."""
    canary = as_canary(canary)
    svc = canary.spec.service
    if svc is None:
        raise WorkloadError(f"canary {canary.name}: spec.service is required to generate Services")
    label, value = selector_label(target, selector_labels)
    ports = service_ports(canary, target) if ports is None else ports
    name = service_name(canary)
    namespace = canary.namespace
    out = []
    for svc_name, pods, extra in (
        (name, f"{value}-primary", svc.apex),
        (f"{name}-primary", f"{value}-primary", svc.primary),
        (f"{name}-canary", value, svc.canary),
    ):
        meta: dict[str, Any] = {
            "name": svc_name,
            "namespace": namespace,
            "labels": {**((extra.labels if extra else None) or {}), label: svc_name},
            "annotations": {**((extra.annotations if extra else None) or {}), **FLUX_DISABLED},
        }
        owners = owner_references(canary)
        if owners:
            meta["ownerReferences"] = owners
        spec: dict[str, Any] = {"type": "ClusterIP", "selector": {label: pods},
                                "ports": copy.deepcopy(ports)}
        if svc.headless:
            spec["clusterIP"] = "None"
        if svc.traffic_distribution:
            spec["trafficDistribution"] = svc.traffic_distribution
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    return out


# ---- comparisons -------------------------------------------------------------------------------


_PORT_KEYS = ("name", "protocol", "port", "targetPort", "appProtocol")


def _norm_ports(ports: list[dict] | None) -> list[dict]:
    return [{k: p.get(k) for k in _PORT_KEYS} for p in ports or []]


def _with_node_ports(desired: list[dict], existing: list[dict] | None) -> list[dict]:
    """Keep the nodePorts the cluster allocated (matched by name, then by port)."""
    by_name = {p.get("name"): p for p in existing or [] if p.get("nodePort")}
    by_port = {p.get("port"): p for p in existing or [] if p.get("nodePort")}
    out = []
    for p in desired:
        p = dict(p)
        old = by_name.get(p.get("name")) or by_port.get(p.get("port"))
        if old:
            p["nodePort"] = old["nodePort"]
        out.append(p)
    return out


def _service_spec_differs(existing: dict, desired: dict, *, keep_type: bool) -> bool:
    es, ds = existing.get("spec") or {}, desired["spec"]
    if (es.get("selector") or {}) != ds["selector"]:
        return True
    if _norm_ports(es.get("ports")) != _norm_ports(ds["ports"]):
        return True
    if not keep_type and es.get("type", "ClusterIP") != ds["type"]:
        return True
    if ds.get("trafficDistribution") != es.get("trafficDistribution") and "trafficDistribution" in ds:
        return True
    return False


def _owned_metadata(existing: dict, desired: dict, unmanaged: list[str] | None, key: str) -> dict:
    """Desired labels/annotations plus the existing keys listed in unmanagedMetadata."""
    current = (existing.get("metadata") or {}).get(key) or {}
    kept = {k: v for k, v in current.items() if k in set(unmanaged or ())}
    return {**kept, **(desired["metadata"].get(key) or {})}


def _original_service(existing: Mapping[str, Any]) -> str:
    spec = existing.get("spec") or {}
    return json.dumps({"selector": spec.get("selector") or {}, "ports": spec.get("ports") or []},
                      sort_keys=True, separators=(",", ":"))


def reverted_service_spec(service: Mapping[str, Any], label: str, value: str) -> tuple[dict, list | None]:
    """(selector, ports or None) the apex Service must get back when the canary is removed.

    A Service we took over gets what we recorded at takeover (annotation
    `canary.dev/original-service`), else what `kubectl apply` last set
    (`kubectl.kubernetes.io/last-applied-configuration`, as Flagger does); a Service we made
    (or one with neither annotation) selects the target's pods with the selector label.
    """
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    for key in (ORIGINAL_SERVICE_ANNOTATION, LAST_APPLIED):
        raw = annotations.get(key)
        if not raw:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        spec = doc.get("spec", doc) if isinstance(doc, dict) else {}
        selector = spec.get("selector") if isinstance(spec, dict) else None
        if isinstance(selector, dict) and selector:
            ports = spec.get("ports")
            return dict(selector), (list(ports) if isinstance(ports, list) and ports else None)
    return {label: value}, None


# ---- writes ------------------------------------------------------------------------------------


async def apply_service(kube: Kube, canary: Canary, desired: dict, *, allow_takeover: bool) -> None:
    ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    unmanaged = canary.spec.service.unmanaged_metadata if canary.spec.service else None
    for _ in range(3):
        existing = await kube.get("v1", "services", ns, name)
        if existing is None:
            try:
                await kube.create("v1", "services", ns, desired)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
                continue
        owned = is_owned_by(existing, canary)
        other = None if owned else foreign_controller(existing, canary)
        if other is not None:
            raise WorkloadError(f"canary {canary.name}: service {name} is controlled by {other}; "
                                "it is not taken over (set service.name to another name)")
        if not owned and not allow_takeover:
            return
        body = copy.deepcopy(existing)
        changed = _service_spec_differs(existing, desired, keep_type=not owned)
        if changed:
            body["spec"]["selector"] = desired["spec"]["selector"]
            body["spec"]["ports"] = _with_node_ports(desired["spec"]["ports"], existing["spec"].get("ports"))
            if owned:
                body["spec"]["type"] = desired["spec"]["type"]
            if "trafficDistribution" in desired["spec"]:
                body["spec"]["trafficDistribution"] = desired["spec"]["trafficDistribution"]
            if not owned:  # remember what we overwrite, for revertOnDeletion
                annotations = body["metadata"].setdefault("annotations", {}) or {}
                annotations.setdefault(ORIGINAL_SERVICE_ANNOTATION, _original_service(existing))
                body["metadata"]["annotations"] = annotations
        if owned:  # a taken-over Service keeps its metadata (but for the annotation above)
            for key in ("labels", "annotations"):
                want = _owned_metadata(existing, desired, getattr(unmanaged, key, None), key)
                if ((existing.get("metadata") or {}).get(key) or {}) != want:
                    body["metadata"][key] = want
                    changed = True
        if not changed:
            return
        try:
            await kube.replace("v1", "services", ns, name, body)
            return
        except ApiError as e:
            if e.status != 409:
                raise
    raise ApiError(409, "Conflict", f"service {ns}/{name} kept changing while being updated")


async def revert_apex(kube: Kube, canary: Canary, ns: str, label: str, value: str) -> None:
    apex_name = service_name(canary)
    for _ in range(3):
        apex = await kube.get("v1", "services", ns, apex_name)
        if apex is None:
            return
        body = copy.deepcopy(apex)
        selector, ports = reverted_service_spec(apex, label, value)
        body["spec"]["selector"] = selector
        if ports is not None:
            body["spec"]["ports"] = _with_node_ports(ports, apex["spec"].get("ports"))
        annotations = body["metadata"].get("annotations") or {}
        if ORIGINAL_SERVICE_ANNOTATION in annotations:
            annotations.pop(ORIGINAL_SERVICE_ANNOTATION)
            body["metadata"]["annotations"] = annotations
        refs = [r for r in body["metadata"].get("ownerReferences") or []
                if not (r.get("kind") == CANARY_KIND and r.get("name") == canary.name)]
        if refs:
            body["metadata"]["ownerReferences"] = refs
        else:
            body["metadata"].pop("ownerReferences", None)
        if body == apex:
            return
        try:
            await kube.replace("v1", "services", ns, apex_name, body)
            return
        except ApiError as e:
            if e.status != 409:
                raise
    raise ApiError(409, "Conflict", f"service {ns}/{apex_name} kept changing while being reverted")
