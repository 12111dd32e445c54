"""What the workload modules share with each other and with the routers and configs: the
annotations we write, owner references, ownership checks, names, selector labels and the
renaming of config references in a pod spec."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from canary.models import Canary

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


def controller_of(obj: Mapping[str, Any]) -> dict | None:
    """The ownerReference with controller: true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def foreign_controller(obj: Mapping[str, Any], canary: Canary) -> str | None:
    """"<Kind> <name>" of the controller of `obj` when it is not this Canary; None otherwise."""
    ref = controller_of(obj)
    if ref is None:
        return None
    uid = canary.metadata.get("uid")
    if ref.get("kind") == CANARY_KIND and ref.get("name") == canary.name and (not uid or ref.get("uid") == uid):
        return None
    return f"{ref.get('kind')} {ref.get('name')}"


def check_target(canary: Canary, target: Mapping[str, Any]) -> None:
    """Refuse a target that is another Canary's object (a confused deputy: canarying another
    team's primary scales it to zero)."""
    name = canary.spec.target_ref.name
    if name.endswith("-primary"):
        raise WorkloadError(f"canary {canary.name}: targetRef {name} ends in -primary, the name of a Deployment "
                            "another Canary generates; target the original Deployment instead")
    ref = controller_of(target)
    if ref is not None and ref.get("kind") == CANARY_KIND:
        raise WorkloadError(f"canary {canary.name}: deployment {name} is controlled by Canary {ref.get('name')}; "
                            "a Canary cannot target another Canary's Deployment")


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
            value = str(match[label])
            if len(value) > 63 - len("-primary"):
                raise WorkloadError(f"deployment {(target.get('metadata') or {}).get('name', '?')}: the selector "
                                    f"label {label}={value[:70]} is longer than 55 characters, so {value[:20]}…-primary "
                                    "would not be a valid label value")
            return label, value
    name = (target.get("metadata") or {}).get("name", "?")
    raise WorkloadError(
        f"deployment {name}: spec.selector.matchLabels has none of the labels "
        f"{', '.join(candidates)}; one of them is needed to tell primary pods from canary pods"
    )


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
