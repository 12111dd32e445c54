"""The primary Deployment, the three ClusterIP Services, scaling and promotion.

Pure builders (`build_primary_deployment`, `build_services`, `service_ports`, ...) turn a Canary
and its target Deployment into the objects we want; `Workloads` compares them with what is in
the cluster and writes only when a field we own differs, so an idle tick costs reads only.

Object shapes follow Flagger (see docs/design.md); differences on purpose:
* the primary's pod template carries `canary.dev/revision: <hash>` instead of a random id, so
  re-applying the same revision is a no-op;
* on promotion with an autoscaler the primary keeps its current replica count instead of
  falling back to the HPA minimum (Flagger #1600);
* `deployment.kubernetes.io/revision` and `kubectl.kubernetes.io/last-applied-configuration`
  are not copied from the target (they describe the target, and the first one belongs to the
  Deployment controller);
* a taken-over apex Service records its original selector and ports in
  `canary.dev/original-service`, which `finalize` (revertOnDeletion) restores;
* tracked ConfigMaps/Secrets may be copied under other names than `<name>-primary` when
  several Canaries share them (`config_copies`, see adapters/configs.py and docs/workloads.md).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.models import Canary
from canary.readiness import deployment_readiness
from canary.revision import template_hash
from canary.types import Readiness

CANARY_API_VERSION = "canary.dev/v1beta1"
CANARY_KIND = "Canary"
REVISION_ANNOTATION = "canary.dev/revision"
REPLICAS_ANNOTATION = "canary.dev/replicas"
ORIGINAL_SERVICE_ANNOTATION = "canary.dev/original-service"  # selector and ports of a taken-over Service
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SELECTOR_LABELS: tuple[str, ...] = ("app", "name", "app.kubernetes.io/name")
# On every object we generate: Flux must not reconcile or drift-correct it, and Argo CD must
# neither prune it nor report it as out of sync (it is not in Git).
FLUX_DISABLED = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "argocd.argoproj.io/sync-options": "Prune=false",
}
GITOPS_ANNOTATIONS = FLUX_DISABLED
SIDECAR_CONTAINERS = ("istio-proxy", "envoy")
_NOT_COPIED_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)
_COPIED_SPEC_FIELDS = ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy")


class WorkloadError(Exception):
    """The target cannot be put under canary control as it is (reported, not retried blindly)."""


# ---- small helpers shared with the routers -------------------------------------------------


def as_canary(canary: Canary | Mapping[str, Any]) -> Canary:
    return canary if isinstance(canary, Canary) else Canary.from_obj(dict(canary))


def owner_references(canary: Canary) -> list[dict]:
    """Controller reference to the Canary; empty when the Canary has no uid (not stored)."""
    uid = canary.metadata.get("uid")
    if not uid:
        return []
    return [{
        "apiVersion": CANARY_API_VERSION,
        "kind": CANARY_KIND,
        "name": canary.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }]


def is_owned_by(obj: Mapping[str, Any], canary: Canary) -> bool:
    uid = canary.metadata.get("uid")
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == CANARY_KIND and ref.get("name") == canary.name:
            if not uid or ref.get("uid") == uid:
                return True
    return False


def without_flux_keys(values: Mapping[str, str] | None) -> dict[str, str]:
    """Labels or annotations to copy onto a generated object: without Flux's keys and Argo CD's
    (its tracking annotation would make Argo CD adopt, and then prune, what we generate)."""
    return {k: v for k, v in (values or {}).items()
            if "toolkit.fluxcd.io" not in k and not k.startswith("argocd.argoproj.io/")}


def contains(outer: Mapping[str, Any] | None, inner: Mapping[str, Any] | None) -> bool:
    """Every key/value of `inner` is in `outer`."""
    outer = outer or {}
    return all(outer.get(k) == v for k, v in (inner or {}).items())


def primary_name(canary: Canary) -> str:
    return f"{canary.spec.target_ref.name}-primary"


def service_name(canary: Canary) -> str:
    return canary.spec.service_name


def selector_label(target: Mapping[str, Any], candidates: Iterable[str] = SELECTOR_LABELS) -> tuple[str, str]:
    """(label, value) of the first candidate label in the target's spec.selector.matchLabels."""
    match = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    candidates = tuple(candidates)
    for label in candidates:
        if match.get(label):
            return label, match[label]
    name = (target.get("metadata") or {}).get("name", "?")
    raise WorkloadError(
        f"deployment {name}: spec.selector.matchLabels has none of the labels "
        f"{', '.join(candidates)}; one of them is needed to tell primary pods from canary pods"
    )


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


def config_renames(tracked_configs: Iterable[str] = (),
                   config_copies: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"configmap/x": "<copy name>"}: `config_copies` as given (from `ConfigCopier.sync`), and
    Flagger's `x-primary` for keys only listed in `tracked_configs`."""
    out = {key: f"{key.partition('/')[2]}-primary" for key in tracked_configs}
    out.update(config_copies or {})
    return out


def _rename_config_refs(pod_spec: dict, renames: Mapping[str, str]) -> None:
    """Point references to tracked ConfigMaps/Secrets ("configmap/x", "secret/x") at their copies."""
    if not renames:
        return

    def new(kind: str, name: str | None) -> str | None:
        return renames.get(f"{kind}/{name}", name) if name else name

    for vol in pod_spec.get("volumes") or []:
        if vol.get("configMap"):
            vol["configMap"]["name"] = new("configmap", vol["configMap"].get("name"))
        if vol.get("secret"):
            vol["secret"]["secretName"] = new("secret", vol["secret"].get("secretName"))
        for src in (vol.get("projected") or {}).get("sources") or []:
            if src.get("configMap"):
                src["configMap"]["name"] = new("configmap", src["configMap"].get("name"))
            if src.get("secret"):
                src["secret"]["name"] = new("secret", src["secret"].get("name"))
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        for env in c.get("env") or []:
            ref = env.get("valueFrom") or {}
            if ref.get("configMapKeyRef"):
                ref["configMapKeyRef"]["name"] = new("configmap", ref["configMapKeyRef"].get("name"))
            if ref.get("secretKeyRef"):
                ref["secretKeyRef"]["name"] = new("secret", ref["secretKeyRef"].get("name"))
        for env in c.get("envFrom") or []:
            if env.get("configMapRef"):
                env["configMapRef"]["name"] = new("configmap", env["configMapRef"].get("name"))
            if env.get("secretRef"):
                env["secretRef"]["name"] = new("secret", env["secretRef"].get("name"))


def _rename_pod_selectors(pod_spec: dict, old_values: set[str]) -> None:
    """Affinity and topology spread selectors that name the target's pods must name the primary's."""

    def fix(selector: dict | None) -> None:
        if not selector:
            return
        for k, v in list((selector.get("matchLabels") or {}).items()):
            if v in old_values:
                selector["matchLabels"][k] = f"{v}-primary"
        for expr in selector.get("matchExpressions") or []:
            expr["values"] = [f"{v}-primary" if v in old_values else v for v in expr.get("values") or []]

    affinity = pod_spec.get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        terms = affinity.get(kind) or {}
        for term in terms.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
            fix(term.get("labelSelector"))
        for weighted in terms.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
            fix((weighted.get("podAffinityTerm") or {}).get("labelSelector"))
    for constraint in pod_spec.get("topologySpreadConstraints") or []:
        fix(constraint.get("labelSelector"))


# ---- pure builders ---------------------------------------------------------------------------


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
        "namespace": tmeta.get("namespace") or canary.namespace,
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
    namespace = (target.get("metadata") or {}).get("namespace") or canary.namespace
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
        ns = (target.get("metadata") or {}).get("namespace") or canary.namespace
        primary = await self._get_deployment(ns, primary_name(canary))
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
        ns, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        unmanaged = canary.spec.service.unmanaged_metadata if canary.spec.service else None
        for _ in range(3):
            existing = await self.kube.get("v1", "services", ns, name)
            if existing is None:
                try:
                    await self.kube.create("v1", "services", ns, desired)
                    return
                except ApiError as e:
                    if e.status != 409:
                        raise
                    continue
            owned = is_owned_by(existing, canary)
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
                await self.kube.replace("v1", "services", ns, name, body)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
        raise ApiError(409, "Conflict", f"service {ns}/{name} kept changing while being updated")

    async def scale_target(self, canary: Canary, target: Mapping[str, Any], up: bool) -> Mapping[str, Any]:
        """Scale the target to zero (recording its replicas first) or back up.

        Returns the target as written (or as given when nothing had to change)."""
        canary = as_canary(canary)
        meta = target.get("metadata") or {}
        ns, name = meta.get("namespace") or canary.namespace, meta["name"]
        current = _replicas_of(target) or 0
        if up:
            want = recorded_replicas(target)
            if want is None:
                want = _replicas_of(await self._get_deployment(ns, primary_name(canary))) or 1
            if current == want:
                return target
            patch: dict[str, Any] = {"spec": {"replicas": want}}
        else:
            if current == 0:
                return target
            patch = {"metadata": {"annotations": {REPLICAS_ANNOTATION: str(current)}},
                     "spec": {"replicas": 0}}
        return await self.kube.patch("apps/v1", "deployments", ns, name, patch)

    async def promote(self, canary: Canary, target: Mapping[str, Any], revision: str, *,
                      tracked_configs: Iterable[str] = (),
                      config_copies: Mapping[str, str] | None = None) -> None:
        """Copy the target's pod template and rollout settings into the primary.

        With an autoscalerRef the primary keeps its current replica count (the HPA owns it);
        Flagger drops it to the HPA minimum here (#1600)."""
        canary = as_canary(canary)
        ns = (target.get("metadata") or {}).get("namespace") or canary.namespace
        name = primary_name(canary)
        for _ in range(3):
            primary = await self._get_deployment(ns, name)
            if primary is None:
                raise WorkloadError(f"deployment {ns}/{name} does not exist; initialize first")
            current = _replicas_of(primary)
            if canary.spec.autoscaler_ref is not None:
                replicas = current  # the HPA decides; do not drop to its minimum (Flagger #1600)
            else:
                replicas = _replicas_of(target) or recorded_replicas(target) or current or 1
            desired = build_primary_deployment(canary, target, revision, replicas=replicas,
                                               selector_labels=self.selector_labels,
                                               tracked_configs=tracked_configs, config_copies=config_copies)
            body = copy.deepcopy(primary)
            spec = body["spec"]
            for field in ("replicas", *_COPIED_SPEC_FIELDS, "template"):
                if field in desired["spec"]:
                    spec[field] = desired["spec"][field]
                elif field != "replicas":
                    spec.pop(field, None)
            if spec == primary["spec"]:
                return
            try:
                await self.kube.replace("apps/v1", "deployments", ns, name, body)
                return
            except ApiError as e:
                if e.status != 409:
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
        ns, name = meta.get("namespace") or canary.namespace, meta["name"]
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
        apex_name = service_name(canary)
        for _ in range(3):
            apex = await self.kube.get("v1", "services", ns, apex_name)
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
                await self.kube.replace("v1", "services", ns, apex_name, body)
                return
            except ApiError as e:
                if e.status != 409:
                    raise
        raise ApiError(409, "Conflict", f"service {ns}/{apex_name} kept changing while being reverted")


@dataclass(frozen=True)
class FinalizeResult:
    """What `Workloads.finalize` achieved."""

    done: bool  # the apex Service selects the target's pods and will survive the Canary
    target: Readiness  # the target's readiness as last seen
    replicas: int  # the replica count the target was given
