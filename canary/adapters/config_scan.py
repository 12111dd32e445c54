"""Config tracking, the pure scanning part (no I/O): which ConfigMaps and Secrets a pod spec uses
and their checksums; see canary/adapters/configs.py for the whole story."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from canary.adapters.workload import WorkloadError
from canary.revision import config_checksum

CONFIGMAP = "configmap"
SECRET = "secret"
TRACKING_ANNOTATIONS = ("flagger.app/config-tracking", "canary.dev/config-tracking")
SOURCE_ANNOTATION = "canary.dev/config-source"
TRACKED_SECRET_TYPES = frozenset({
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
})
MAX_NAME = 253  # ConfigMap and Secret names are DNS subdomains
CHECKSUM_KEY = "canary.dev/checksum"  # in a slim cache entry: the checksum of the content it dropped

ConfigRef = tuple[str, str, bool]  # (kind, name, optional)
Lookup = Callable[[str, str], "Mapping[str, Any] | None"]  # (kind, name) -> object or None

_API = {CONFIGMAP: ("v1", "configmaps", "ConfigMap"), SECRET: ("v1", "secrets", "Secret")}


class ConfigError(WorkloadError):
    """A tracked config cannot be copied as it is (missing, changed since tested, name taken)."""


# ---- scanning (pure) --------------------------------------------------------------------------


def config_refs(pod_spec: Mapping[str, Any] | None) -> set[ConfigRef]:
    """Every ConfigMap and Secret a pod spec references, as (kind, name, optional)."""
    refs: set[ConfigRef] = set()
    pod_spec = pod_spec or {}

    def add(kind: str, ref: Mapping[str, Any] | None, key: str = "name") -> None:
        if ref and ref.get(key):
            refs.add((kind, ref[key], bool(ref.get("optional"))))

    for vol in pod_spec.get("volumes") or []:
        add(CONFIGMAP, vol.get("configMap"))
        add(SECRET, vol.get("secret"), "secretName")
        for src in (vol.get("projected") or {}).get("sources") or []:
            add(CONFIGMAP, src.get("configMap"))
            add(SECRET, src.get("secret"))
    for c in list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or []):
        for env in c.get("env") or []:
            value_from = env.get("valueFrom") or {}
            add(CONFIGMAP, value_from.get("configMapKeyRef"))
            add(SECRET, value_from.get("secretKeyRef"))
        for env in c.get("envFrom") or []:
            add(CONFIGMAP, env.get("configMapRef"))
            add(SECRET, env.get("secretRef"))
    return refs


def tracking_disabled(obj: Mapping[str, Any]) -> bool:
    """Annotated `flagger.app/config-tracking` or `canary.dev/config-tracking` with a value
    starting with "disable" (as Flagger reads it)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return any(str(annotations.get(key, "")).lower().startswith("disable") for key in TRACKING_ANNOTATIONS)


def secret_type_tracked(secret: Mapping[str, Any]) -> bool:
    return (secret.get("type") or "Opaque") in TRACKED_SECRET_TYPES


def content_checksum(obj: Mapping[str, Any]) -> str:
    """Checksum of a ConfigMap's or Secret's content.

    Flagger hashes ``data`` only; we do the same (identical values) unless a ConfigMap has
    ``binaryData``, which Flagger ignores: then its keys join the hash as ``binaryData/<key>``
    (a ``/`` cannot occur in a data key, so nothing collides).
    """
    data = obj.get("data")
    binary = obj.get("binaryData")
    if not binary:
        return config_checksum(data)
    merged = dict(data or {})
    merged.update({f"binaryData/{k}": v for k, v in binary.items()})
    return config_checksum(merged)


def tracked_configs(pod_spec: Mapping[str, Any] | None, lookup: Lookup) -> tuple[dict[str, str], list[str]]:
    """({"configmap/<name>"|"secret/<name>": checksum}, problems) for a pod spec.

    Skipped: objects annotated config-tracking disabled, Secrets of types other than Opaque,
    basic-auth, ssh-auth and tls, and missing objects that every reference marks optional.
    A missing object referenced at least once without ``optional: true`` is a problem: pods
    cannot start without it, so no analysis should start either.
    """
    optional: dict[tuple[str, str], bool] = {}
    for kind, name, is_optional in config_refs(pod_spec):
        optional[(kind, name)] = optional.get((kind, name), True) and is_optional
    tracked: dict[str, str] = {}
    problems: list[str] = []
    for (kind, name), is_optional in sorted(optional.items()):
        obj = lookup(kind, name)
        if obj is None:
            if not is_optional:
                problems.append(f"{_API[kind][2]} {name} is referenced by the pod template but does not exist")
            continue
        if tracking_disabled(obj):
            continue
        if kind == SECRET and not secret_type_tracked(obj):
            continue
        tracked[f"{kind}/{name}"] = checksum_of(obj)
    return tracked, problems


def tracked_configs_of(workload: Mapping[str, Any] | None, lookup: Lookup) -> tuple[dict[str, str], list[str]]:
    """`tracked_configs` of a Deployment's pod template ({} and no problems without one)."""
    if not workload:
        return {}, []
    pod_spec = (((workload.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return tracked_configs(pod_spec, lookup)


def uses_config(workload: Mapping[str, Any] | None, kind: str, name: str) -> bool:
    """Whether a Deployment's pod template references ConfigMap/Secret `name` (kind "configmap"
    or "secret"): which Canaries to wake when a config changes."""
    pod_spec = ((((workload or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
    return any(k == kind and n == name for k, n, _ in config_refs(pod_spec))


def slim_config(obj: Mapping[str, Any]) -> dict:
    """What a watch cache keeps of a ConfigMap or Secret: metadata, type and the checksum of
    the content, never the content itself (a heap dump of the operator exposes no Secret, and a
    namespace full of large ConfigMaps costs a few hundred bytes each). A Secret of a type that
    is never tracked (service account tokens, registry credentials, Helm release records) is
    kept as a marker without a checksum, so that a pod template referring to it is not taken for
    one referring to a missing object. The content is read with a GET when a copy is made."""
    meta = obj.get("metadata") or {}
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels") if k in meta}
    tracking = {k: v for k, v in (meta.get("annotations") or {}).items() if k in TRACKING_ANNOTATIONS}
    if tracking:
        slim_meta["annotations"] = tracking
    out = {k: obj[k] for k in ("apiVersion", "kind", "type", "immutable") if k in obj}
    out["metadata"] = slim_meta
    if not (obj.get("kind") == "Secret" and not secret_type_tracked(obj)):
        out[CHECKSUM_KEY] = content_checksum(obj)
    return out


def checksum_of(obj: Mapping[str, Any]) -> str:
    """The content checksum of a full object or of its slim cache entry."""
    cached = obj.get(CHECKSUM_KEY)
    return cached if isinstance(cached, str) else content_checksum(obj)


def split_key(key: str) -> tuple[str, str]:
    kind, _, name = key.partition("/")
    if kind not in _API or not name:
        raise ValueError(f"not a tracked config key: {key!r}")
    return kind, name
