"""Config tracking: which ConfigMaps and Secrets a pod template uses, their checksums, and the
`-primary` copies the primary Deployment runs with.

Pure part (no I/O):

* ``config_refs(pod_spec)`` lists every ConfigMap/Secret reference of a pod spec: volumes
  (``configMap``, ``secret``, ``projected`` sources), ``env[].valueFrom`` key refs and ``envFrom``,
  in ``containers`` and ``initContainers``, each with its ``optional`` flag.
* ``tracked_configs(pod_spec, lookup)`` turns them into ``{"configmap/<name>": checksum}`` the
  way Flagger's config tracker does (same keys, same checksums), using ``lookup(kind, name)``
  (the operator's watch caches) instead of GETs. Problems (a mandatory ref that does not exist)
  are returned, not raised, so the reconciler can report them and the engine can hold the run.
* ``choose_copy_name`` / ``build_copy``: the name and content of a copy.

Copy naming (Flagger compatible, fixes Flagger #1930 "shared ConfigMaps are promoted by any
Canary that succeeds"): a copy belongs to exactly one Canary (its controller owner reference)
and records its source in the annotation ``canary.dev/config-source: configmap/<name>``. The
first free name of

1. ``<name>-primary``                (Flagger's name: the single-user case is unchanged)
2. ``<name>-<target>-primary``       (the config is shared and 1. belongs to another Canary)
3. ``<name>-<hash>-primary``         (both names above are taken by something else)

is used, but a name this Canary already owns for the same source always wins, so a name never
changes once chosen. Two Canaries sharing a ConfigMap therefore promote it independently: each
primary only ever sees the content its own analysis tested. An object of that name that is not
a copy of the same source made for this Canary (a user's own ``x-primary``, another Canary's
copy) is never overwritten. A copy whose controller is a Canary of the same name but another
uid or API group (a Flagger-made copy, or one left by a deleted and re-created Canary) is
adopted.

I/O part: ``ConfigCopier(kube).sync(...)`` creates/updates the copies and returns the
``{"configmap/<name>": "<copy name>"}`` mapping the primary Deployment builder renames refs
with (``Workloads.initialize/promote(config_copies=...)``). It writes only when a copy would
change.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Callable, Iterable, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.adapters.workload import (
    CANARY_KIND,
    WorkloadError,
    as_canary,
    owner_references,
    without_flux_keys,
)
from canary.models import Canary
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
        tracked[f"{kind}/{name}"] = content_checksum(obj)
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


def slim_config(obj: Mapping[str, Any]) -> dict | None:
    """What a watch cache needs to keep of a ConfigMap or Secret for tracking and copying, or
    None for a Secret whose type is never tracked (service account tokens, registry
    credentials, Helm release records: most of a cluster's Secrets by size)."""
    if obj.get("kind") == "Secret" and not secret_type_tracked(obj):
        return None
    meta = obj.get("metadata") or {}
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels") if k in meta}
    tracking = {k: v for k, v in (meta.get("annotations") or {}).items() if k in TRACKING_ANNOTATIONS}
    if tracking:
        slim_meta["annotations"] = tracking
    out = {k: obj[k] for k in ("apiVersion", "kind", "type", "immutable", "data", "binaryData") if k in obj}
    out["metadata"] = slim_meta
    return out


def split_key(key: str) -> tuple[str, str]:
    kind, _, name = key.partition("/")
    if kind not in _API or not name:
        raise ValueError(f"not a tracked config key: {key!r}")
    return kind, name


# ---- copies (pure) ----------------------------------------------------------------------------


def _fit(name: str, suffix: str, salt: str) -> str:
    """`name + suffix`, shortened with a hash when it would exceed the name length limit."""
    if len(name) + len(suffix) <= MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def copy_name_candidates(canary: Canary, name: str) -> list[str]:
    """Names a copy of `name` may get for this Canary, in order of preference."""
    target = canary.spec.target_ref.name
    digest = hashlib.sha256(f"{canary.namespace}/{target}/{name}".encode()).hexdigest()[:8]
    out: list[str] = []
    for candidate in (_fit(name, "-primary", ""),
                      _fit(name, f"-{target}-primary", target),
                      _fit(name, f"-{digest}-primary", digest)):
        if candidate not in out:
            out.append(candidate)
    return out


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def copy_relation(obj: Mapping[str, Any] | None, canary: Canary, key: str) -> str:
    """How an existing object relates to this Canary's copy of `key`.

    "missing" (no object), "ours" (made by this Canary for this source), "adoptable" (a copy of
    this source made for a Canary of the same name: Flagger's, a re-created Canary's, or one
    whose owner was removed), "foreign" (anything else: never overwritten).
    """
    if obj is None:
        return "missing"
    meta = obj.get("metadata") or {}
    source = (meta.get("annotations") or {}).get(SOURCE_ANNOTATION)
    _, name = split_key(key)
    if source is not None:
        same_source = source == key
    else:  # a copy made by Flagger carries no annotation; its name is the only hint
        same_source = meta.get("name") == f"{name}-primary"
    if not same_source:
        return "foreign"
    ctrl = _controller(obj)
    if ctrl is None:
        # unowned: only adopt what we annotated ourselves (never a user's own "x-primary")
        return "adoptable" if source is not None else "foreign"
    if ctrl.get("kind") != CANARY_KIND or ctrl.get("name") != canary.name:
        return "foreign"
    uid = canary.metadata.get("uid")
    group = str(ctrl.get("apiVersion", "")).split("/")[0]
    if group == "canary.dev" and (not uid or ctrl.get("uid") == uid):
        return "ours"
    return "adoptable"


def choose_copy_name(canary: Canary, key: str, existing: Callable[[str], Mapping[str, Any] | None]) -> str:
    """The copy name for tracked config `key`, given `existing(name)` -> object or None."""
    canary = as_canary(canary)
    _, name = split_key(key)
    candidates = copy_name_candidates(canary, name)
    relations = {c: copy_relation(existing(c), canary, key) for c in candidates}
    for wanted in ("ours", "adoptable", "missing"):
        for c in candidates:
            if relations[c] == wanted:
                return c
    raise ConfigError(f"no name is free for the copy of {key}: {', '.join(candidates)} "
                      "all exist and are not managed by this Canary")


def build_copy(canary: Canary, key: str, source: Mapping[str, Any], copy_name: str) -> dict:
    """The copy of a ConfigMap or Secret: same content (and type), labels without Flux keys,
    controlled by this Canary, annotated with its source."""
    canary = as_canary(canary)
    kind, _ = split_key(key)
    api_version, _, kind_name = _API[kind]
    smeta = source.get("metadata") or {}
    meta: dict[str, Any] = {
        "name": copy_name,
        "namespace": smeta.get("namespace") or canary.namespace,
        "annotations": {SOURCE_ANNOTATION: key},
    }
    labels = without_flux_keys(smeta.get("labels"))
    if labels:
        meta["labels"] = labels
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind_name, "metadata": meta}
    if kind == SECRET:
        body["type"] = source.get("type") or "Opaque"
    for field in ("data", "binaryData"):
        if source.get(field):
            body[field] = copy.deepcopy(source[field])
    return body


def _merged_owners(existing: list[dict] | None, ours: list[dict]) -> list[dict]:
    """Our controller reference, plus the owners that are not Canaries (references to other
    Canaries come from Flagger's shared copies, which per-Canary copies replace)."""
    existing = list(existing or [])
    if not ours:
        return existing
    others = [r for r in existing if r.get("kind") != CANARY_KIND and not r.get("controller")]
    mine = [r for r in existing if r.get("uid") == ours[0]["uid"]]
    if mine == ours and len(existing) == len(others) + 1:
        return existing  # already right: keep the order as stored
    return ours + others


def copy_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict | None:
    """The body to PUT so that `existing` matches `desired`, or None when it already does."""
    body = copy.deepcopy(dict(existing))
    meta = body.setdefault("metadata", {})
    for field in ("data", "binaryData"):
        if desired.get(field):
            body[field] = copy.deepcopy(desired[field])
        else:
            body.pop(field, None)
    if "type" in desired:
        body["type"] = desired["type"]
    want_labels = desired["metadata"].get("labels") or {}
    if (meta.get("labels") or {}) != want_labels:
        meta["labels"] = want_labels
    meta["annotations"] = {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]}
    meta["ownerReferences"] = _merged_owners(meta.get("ownerReferences"),
                                             desired["metadata"].get("ownerReferences") or [])
    if not meta["ownerReferences"]:
        meta.pop("ownerReferences")
    return None if body == existing else body


# ---- applier ------------------------------------------------------------------------------------


class ConfigCopier:
    """Creates and updates the copies of tracked configs for one Canary's primary."""

    def __init__(self, kube: Kube):
        self.kube = kube

    async def sync(self, canary: Canary | Mapping[str, Any], target_namespace: str,
                   tracked: Mapping[str, str], lookup: Lookup, *, init: bool = False) -> dict[str, str]:
        """Bring the copies of `tracked` ({"configmap/x": checksum}) in line with their sources.

        Call it right before `Workloads.initialize` (init=True) and `Workloads.promote`
        (init=False), and pass the result as their `config_copies`.

        init=True creates missing copies; existing ones are updated only while the primary
        Deployment does not exist yet (an existing primary runs the content it was promoted
        with, and must not see an untested config). init=False (promotion) creates and updates.
        The source must still have the checksum in `tracked` (what the analysis saw): a source
        that changed since raises ConfigError, the next tick sees the new revision.

        Returns {"configmap/x": "<copy name>"} for every key in `tracked`.
        """
        canary = as_canary(canary)
        ns = target_namespace or canary.namespace
        update_existing = True
        if init:
            primary = await self.kube.get("apps/v1", "deployments", ns,
                                          f"{canary.spec.target_ref.name}-primary")
            update_existing = primary is None
        names: dict[str, str] = {}
        for key in sorted(tracked):
            kind, name = split_key(key)
            source = lookup(kind, name)
            if source is None:
                raise ConfigError(f"{_API[kind][2]} {ns}/{name} is tracked but does not exist")
            if content_checksum(source) != tracked[key]:
                raise ConfigError(f"{_API[kind][2]} {ns}/{name} changed since it was tested; "
                                  "its new content needs an analysis first")
            names[key] = await self._sync_one(canary, ns, key, source, update_existing)
        return names

    async def _sync_one(self, canary: Canary, ns: str, key: str, source: Mapping[str, Any],
                        update_existing: bool) -> str:
        kind, name = split_key(key)
        for _ in range(4):
            seen: dict[str, dict | None] = {}
            for candidate in copy_name_candidates(canary, name):
                seen[candidate] = await self._get(kind, ns, candidate)
            copy_name = choose_copy_name(canary, key, seen.__getitem__)
            existing = seen[copy_name]
            desired = build_copy(canary, key, source, copy_name)
            desired["metadata"]["namespace"] = ns
            try:
                if existing is None:
                    await self._create(kind, ns, desired)
                    return copy_name
                if not update_existing:
                    return copy_name  # the primary runs this content; it changes only on promotion
                body = copy_update(existing, desired)
                if body is None:
                    return copy_name
                if existing.get("immutable") or (kind == SECRET and existing.get("type") != desired.get("type")):
                    # type and immutable content cannot be changed in place
                    await self._delete(kind, ns, copy_name)
                    await self._create(kind, ns, desired)
                else:
                    await self._replace(kind, ns, copy_name, body)
                return copy_name
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
        raise ApiError(409, "Conflict", f"{key} copy in {ns} kept changing while being synced")

    # One call per kind and verb, with the resource spelled out: the RBAC rules test reads the
    # rights the operator needs off these lines.

    async def _get(self, kind: str, ns: str, name: str) -> dict | None:
        if kind == SECRET:
            return await self.kube.get("v1", "secrets", ns, name)
        return await self.kube.get("v1", "configmaps", ns, name)

    async def _create(self, kind: str, ns: str, body: dict) -> dict:
        if kind == SECRET:
            return await self.kube.create("v1", "secrets", ns, body)
        return await self.kube.create("v1", "configmaps", ns, body)

    async def _replace(self, kind: str, ns: str, name: str, body: dict) -> dict:
        if kind == SECRET:
            return await self.kube.replace("v1", "secrets", ns, name, body)
        return await self.kube.replace("v1", "configmaps", ns, name, body)

    async def _delete(self, kind: str, ns: str, name: str) -> None:
        if kind == SECRET:
            await self.kube.delete("v1", "secrets", ns, name)
        else:
            await self.kube.delete("v1", "configmaps", ns, name)


def copy_names(tracked: Iterable[str]) -> dict[str, str]:
    """Flagger's naming (`<name>-primary`) for keys, for callers that do not sync copies."""
    return {key: f"{split_key(key)[1]}-primary" for key in tracked}
