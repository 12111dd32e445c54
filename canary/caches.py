"""The operator's watch caches: the latest version of each watched object, never older than our
own writes, and only what decisions need (ConfigMap/Secret checksums, no managedFields), with an
index of the configs each Deployment refers to."""

from __future__ import annotations

from dataclasses import dataclass, field

from canary.adapters.configs import config_refs, slim_config


class WatchCache:
    """Latest version of each watched object, keyed by (namespace, name): an informer store.

    Never goes back in time: an event older (by resourceVersion) than what is held is ignored,
    so our own writes (fed in through `Kube.on_written`) are not undone by a late watch event.
    """

    def __init__(self, slim=None) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self._slim = slim  # obj -> what to keep (None: drop the object)

    def update(self, event: dict) -> tuple[str, str] | None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            held = self.objects.get(key)
            if held is None or not _newer(held, obj):
                self.objects.pop(key, None)
            return key
        held = self.objects.get(key)
        if held is not None and _newer(held, obj):
            return key
        kept = self._slim(obj) if self._slim is not None else obj
        if kept is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = kept
        return key

    def get(self, namespace: str, name: str) -> dict | None:
        return self.objects.get((namespace, name))


def slim_deployment(obj: dict) -> dict:
    """What the Deployment cache keeps: all but metadata.managedFields (the largest part of an
    object, and nothing a decision reads; the pod template is kept whole: the revision hash and
    the primary's copy are made from it)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class DeploymentCache(WatchCache):
    """Deployments, with an index of the ConfigMaps and Secrets each pod template refers to, so
    that a config event wakes its users without a scan of every cached Deployment."""

    def __init__(self) -> None:
        super().__init__(slim_deployment)
        self._refs: dict[tuple[str, str], set[tuple[str, str]]] = {}  # deployment -> {(kind, config)}
        self.users: dict[tuple[str, str, str], set[str]] = {}  # (namespace, kind, config) -> deployments

    def update(self, event: dict) -> tuple[str, str] | None:
        key = super().update(event)
        if key is not None:
            obj = self.objects.get(key)
            pod_spec = ((((obj or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
            refs = {(k, n) for k, n, _ in config_refs(pod_spec)} if obj is not None else set()
            old = self._refs.get(key, set())
            if refs != old:
                for kind, name in old - refs:
                    users = self.users.get((key[0], kind, name))
                    if users is not None:
                        users.discard(key[1])
                        if not users:
                            del self.users[(key[0], kind, name)]
                for kind, name in refs - old:
                    self.users.setdefault((key[0], kind, name), set()).add(key[1])
                if refs:
                    self._refs[key] = refs
                else:
                    self._refs.pop(key, None)
        return key

    def using(self, namespace: str, kind: str, name: str) -> list[str]:
        return sorted(self.users.get((namespace, kind, name), ()))


def _rv(obj: dict) -> int | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def _newer(held: dict, candidate: dict) -> bool:
    """`held` is a strictly newer version of the same object than `candidate`."""
    a, b = _rv(held), _rv(candidate)
    same = (held.get("metadata") or {}).get("uid") == (candidate.get("metadata") or {}).get("uid")
    return a is not None and b is not None and a > b and same


@dataclass
class Caches:
    deployments: DeploymentCache = field(default_factory=DeploymentCache)
    templates: WatchCache = field(default_factory=WatchCache)
    alert_providers: WatchCache = field(default_factory=WatchCache)
    # metadata and checksums only, never the content (canary.adapters.configs.slim_config)
    configmaps: WatchCache = field(default_factory=lambda: WatchCache(slim_config))
    secrets: WatchCache = field(default_factory=lambda: WatchCache(slim_config))
    routes: dict[str, WatchCache] = field(default_factory=dict)  # plural -> cache

    def route_object(self, plural: str, namespace: str, name: str) -> dict | None:
        cache = self.routes.get(plural)
        return cache.get(namespace, name) if cache is not None else None

    def deployment(self, namespace: str, name: str) -> dict | None:
        return self.deployments.get(namespace, name)

    def metric_template(self, namespace: str, name: str) -> dict | None:
        return self.templates.get(namespace, name)

    def alert_provider(self, namespace: str, name: str) -> dict | None:
        return self.alert_providers.get(namespace, name)

    def config(self, kind: str, namespace: str, name: str) -> dict | None:
        """kind: "configmap" | "secret"."""
        return (self.configmaps if kind == "configmap" else self.secrets).get(namespace, name)

    def written(self, obj: dict) -> None:
        """Write-through of an object our own client just wrote (`Kube.on_written`): a cache is
        never older than our last write, so a write is never skipped for equalling a stale copy."""
        kind = obj.get("kind")
        if kind == "Deployment":
            self.deployments.update({"type": "MODIFIED", "object": obj})
        elif kind in ("VirtualService", "DestinationRule", "HTTPRoute"):
            cache = self.routes.get(kind.lower() + "s")
            if cache is not None:
                cache.update({"type": "MODIFIED", "object": obj})
