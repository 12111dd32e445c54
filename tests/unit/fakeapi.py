"""An in-memory Kubernetes API server behind `httpx.MockTransport`, for `canary.adapters.kube.Kube`.

Enough of the API for the operator's own requests: discovery, get/list/create/replace/
merge-patch/delete on any resource path, resourceVersion conflicts (409), 404s, a status
subresource, metadata.generation, and 403 for (group, resource, verb) rules removed with
`forbid`. Every request is recorded as a `Request` with the place in `canary/` that made it,
which is how tests/unit/test_rbac_rules.py learns which rights the code uses.

A Deployment written here is "rolled out" at once (status all ready), unless its pod template
has the annotation `sim.canary.dev/ready: "false"`, as on the testbed.
"""

from __future__ import annotations

import copy
import json
import traceback
from dataclasses import dataclass
from pathlib import Path

import httpx

from canary.adapters.kube import Kube

CANARY_DIR = Path(__file__).resolve().parents[2] / "canary"
KUBE_CLIENT = CANARY_DIR / "adapters" / "kube.py"

# group -> versions served (first preferred); "" is the core group
DEFAULT_GROUPS = {
    "": ["v1"],
    "apps": ["v1"],
    "coordination.k8s.io": ["v1"],
    "autoscaling": ["v2", "v2beta2", "v1"],
    "canary.dev": ["v1beta1"],
    "networking.istio.io": ["v1beta1", "v1"],
    "gateway.networking.k8s.io": ["v1", "v1beta1"],
}

_VERB_OF_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Request:
    verb: str  # Kubernetes verb: get list create update patch delete (or "discovery")
    group: str
    resource: str  # plural, "/subresource" appended when there is one
    namespace: str | None
    name: str | None
    site: tuple[str, int] | None  # (file relative to the repo, line) in canary/ that sent it


def _site() -> tuple[str, int] | None:
    """The innermost frame in canary/ outside the client itself: who asked for this request."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path == KUBE_CLIENT or CANARY_DIR not in path.parents:
            continue
        return (str(path.relative_to(CANARY_DIR.parent)), frame.lineno)
    return None


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class JsonPatchTestFailed(Exception):
    pass


def json_patch(target: dict, ops: list[dict]) -> dict:
    """RFC 6902's test, replace, add and remove on object paths (what canary/ sends)."""
    out = copy.deepcopy(target)
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        parent = out
        for k in keys[:-1]:
            parent = parent[k]
        last = keys[-1]
        if op["op"] == "test":
            if parent.get(last) != op["value"]:
                raise JsonPatchTestFailed(op["path"])
        elif op["op"] in ("replace", "add"):
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        else:
            raise ValueError(f"json patch op {op['op']!r} is not supported by the fake")
    return out


class FakeApiServer:
    def __init__(self, groups: dict[str, list[str]] | None = None):
        self.groups = dict(DEFAULT_GROUPS if groups is None else groups)
        self.objects: dict[tuple[str, str | None, str, str], dict] = {}  # (group, ns, plural, name)
        self.requests: list[Request] = []
        self.forbidden: set[tuple[str, str, str]] = set()  # (group, resource, verb)
        self._rv = 100
        self.fail_next: dict[tuple[str, str], int] = {}  # (resource, verb) -> status to answer once

    # ---- test helpers ---------------------------------------------------------------

    def kube(self, **kwargs) -> Kube:
        return Kube("https://fake.invalid", transport=httpx.MockTransport(self.handle), **kwargs)

    def forbid(self, group: str, resource: str, verb: str) -> None:
        self.forbidden.add((group, resource, verb))

    def put(self, obj: dict) -> dict:
        """Store an object as a client would create it (no request recorded)."""
        api_version = obj["apiVersion"]
        group = api_version.split("/")[0] if "/" in api_version else ""
        plural = obj.get("_plural") or _plural_of(obj["kind"])
        obj = {k: v for k, v in obj.items() if k != "_plural"}
        return self._create(group, obj["metadata"].get("namespace"), plural, obj)

    def get(self, group: str, namespace: str | None, plural: str, name: str) -> dict | None:
        obj = self.objects.get((group, namespace, plural, name))
        return copy.deepcopy(obj) if obj is not None else None

    def used(self) -> set[tuple[str, str, str]]:
        return {(r.group, r.resource, r.verb) for r in self.requests if r.verb != "discovery"}

    # ---- the server ---------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _create(self, group, namespace, plural, body) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        meta.setdefault("uid", f"uid-{plural}-{meta.get('name')}")
        meta["resourceVersion"] = self._next_rv()
        meta["generation"] = 1
        meta.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        self._controllers(group, plural, obj)
        self.objects[(group, namespace, plural, meta["name"])] = obj
        return copy.deepcopy(obj)

    def _store(self, group, namespace, plural, old, new, status_only=False) -> dict:
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "namespace", "name"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        if status_only:
            new = {**copy.deepcopy(old), "status": new.get("status")}
            meta = new["metadata"]
        elif "status" in old and plural != "deployments":
            new["status"] = copy.deepcopy(old["status"])  # the main resource ignores status
        generation = int(old["metadata"].get("generation") or 1)
        if not status_only and new.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = generation
        meta["resourceVersion"] = self._next_rv()
        self._controllers(group, plural, new)
        self.objects[(group, namespace, plural, meta["name"])] = new
        return copy.deepcopy(new)

    def _controllers(self, group: str, plural: str, obj: dict) -> None:
        """The Deployment controller and the kubelet, instantly."""
        if (group, plural) != ("apps", "deployments"):
            return
        spec = obj.get("spec") or {}
        replicas = int(spec.get("replicas", 1) or 0)
        annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
        ready = 0 if annotations.get("sim.canary.dev/ready") == "false" else replicas
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": "True" if ready >= replicas else "False",
                            "reason": "MinimumReplicasAvailable" if ready >= replicas else "MinimumReplicasUnavailable",
                            "lastUpdateTime": "2024-01-01T00:00:00Z"}],
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = request.method
        parts = [p for p in path.split("/") if p]
        # discovery: /api, /apis/<group>
        if parts == ["api"] or (len(parts) == 2 and parts[0] == "apis"):
            group = "" if parts == ["api"] else parts[1]
            self.requests.append(Request("discovery", group, "", None, None, _site()))
            versions = self.groups.get(group)
            if versions is None:
                return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
            if group == "":
                return httpx.Response(200, json={"kind": "APIVersions", "versions": versions})
            return httpx.Response(200, json={
                "kind": "APIGroup", "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
            })
        group, version, namespace, plural, name, sub = _split(parts)
        if method == "GET":
            verb = "get" if name else "list"
        else:
            verb = _VERB_OF_METHOD[method]
        resource = f"{plural}/{sub}" if sub else plural
        self.requests.append(Request(verb, group, resource, namespace, name, _site()))
        if (group, resource, verb) in self.forbidden:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            return _status(403, "Forbidden",
                           f'{resource}.{group or "core"} "{name or ""}" is forbidden: User "test" cannot {verb} '
                           f'resource "{plural}" in API group "{group}"{where}')
        if group not in self.groups or version not in self.groups[group]:
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        forced = self.fail_next.pop((resource, verb), None)
        if forced:
            return _status(forced, "Forced", "forced failure")
        key = (group, namespace, plural, name)
        body = json.loads(request.content) if request.content else None
        if verb == "get":
            obj = self.objects.get(key)
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            return httpx.Response(200, json=obj)
        if verb == "list":
            items = [o for (g, ns, p, _), o in self.objects.items()
                     if g == group and p == plural and (namespace is None or ns == namespace)]
            return httpx.Response(200, json={"kind": "List", "items": items})
        if verb == "create":
            key = (group, namespace, plural, body["metadata"]["name"])
            if key in self.objects:
                return _status(409, "AlreadyExists", f'{plural} "{key[3]}" already exists')
            return httpx.Response(201, json=self._create(group, namespace, plural, body))
        old = self.objects.get(key)
        if old is None:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        if verb == "update":
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != old["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                                "the object has been modified")
            return httpx.Response(200, json=self._store(group, namespace, plural, old, body, sub == "status"))
        if verb == "patch":
            ctype = request.headers.get("content-type", "")
            if "json-patch" in ctype:
                try:
                    new = json_patch(old, body)
                except JsonPatchTestFailed:  # as the API server answers a failed `test`
                    return _status(422, "Invalid", "the server rejected our request due to an error in our request")
                return httpx.Response(200, json=self._store(group, namespace, plural, old, new, sub == "status"))
            rv = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if rv is not None and rv != old["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                                "the object has been modified")
            new = merge_patch(old, body)
            return httpx.Response(200, json=self._store(group, namespace, plural, old, new, sub == "status"))
        if verb == "delete":
            del self.objects[key]
            return httpx.Response(200, json={"kind": "Status", "status": "Success"})
        return _status(405, "MethodNotAllowed", method)


def _split(parts: list[str]) -> tuple[str, str, str | None, str | None, str | None, str | None]:
    if parts[0] == "api":
        group, rest = "", parts[1:]
    else:
        group, rest = parts[1], parts[2:]
    version, rest = rest[0], rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return group, version, namespace, plural, name, sub


def _status(code: int, reason: str, message: str) -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": reason, "message": message, "code": code})


def _plural_of(kind: str) -> str:
    special = {"Canary": "canaries", "VirtualService": "virtualservices", "DestinationRule": "destinationrules",
               "HTTPRoute": "httproutes", "MetricTemplate": "metrictemplates", "AlertProvider": "alertproviders"}
    return special.get(kind, kind.lower() + "s")
