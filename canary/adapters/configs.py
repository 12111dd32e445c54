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

from typing import Any, Mapping

from canary.adapters.kube import ApiError, Kube
from canary.adapters.config_scan import (
    CHECKSUM_KEY,
    CONFIGMAP,
    MAX_NAME,
    SECRET,
    SOURCE_ANNOTATION,
    TRACKED_SECRET_TYPES,
    TRACKING_ANNOTATIONS,
    _API,
    ConfigError,
    ConfigRef,
    Lookup,
    checksum_of,
    config_refs,
    content_checksum,
    secret_type_tracked,
    slim_config,
    split_key,
    tracked_configs,
    tracked_configs_of,
    tracking_disabled,
    uses_config,
)
from canary.adapters.config_copies import (
    build_copy,
    choose_copy_name,
    copy_name_candidates,
    copy_names,
    copy_relation,
    copy_update,
)
from canary.adapters.workload import as_canary
from canary.models import Canary

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
            # the content is read now (caches keep checksums only) and must be what was tested
            source = await self._get(kind, ns, name)
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


__all__ = [
    "CHECKSUM_KEY",
    "CONFIGMAP",
    "MAX_NAME",
    "SECRET",
    "SOURCE_ANNOTATION",
    "TRACKED_SECRET_TYPES",
    "TRACKING_ANNOTATIONS",
    "ConfigCopier",
    "ConfigError",
    "ConfigRef",
    "Lookup",
    "build_copy",
    "checksum_of",
    "choose_copy_name",
    "config_refs",
    "content_checksum",
    "copy_name_candidates",
    "copy_names",
    "copy_relation",
    "copy_update",
    "secret_type_tracked",
    "slim_config",
    "split_key",
    "tracked_configs",
    "tracked_configs_of",
    "tracking_disabled",
    "uses_config",
]
