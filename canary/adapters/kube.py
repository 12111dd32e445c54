"""A small asynchronous Kubernetes API client.

The operator runs inside an asyncio loop, so every call here is a coroutine on top of
`httpx.AsyncClient`. Credentials come from the official `kubernetes` package's loaders
(kubeconfig file or in-cluster service account), which fill a
`kubernetes.client.Configuration`; we only read host, token, client certificate and CA
from it. Objects are plain dicts as the API server sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from typing import Any, Callable, Literal, Sequence
from urllib.parse import quote

import httpx

from canary.ratelimit import TokenBucket, retry_after

PatchKind = Literal["merge", "json", "strategic"]

_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}

WRITE_VERBS = ("create", "update", "patch", "delete")


class ApiError(Exception):
    """A non-2xx answer of the API server, with the server's own explanation."""

    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        # "NotFound" -> "not found"
        reason = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.reason or "error").lower()
        return f"{reason} ({self.status}): {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class InvalidName(ApiError):
    """A name that cannot be one path segment of a request (client-go's IsValidPathSegmentName).

    Raised before anything is sent. A subclass of ApiError so that every caller that copes with
    a refused request copes with this one; the reconciler reports it as an invalid spec."""

    def __init__(self, what: str, value: object, why: str):
        self.what = what
        self.value = value
        super().__init__(422, "Invalid", f"{what} {str(value)[:80]!r} {why}")


class UnexpectedObject(ApiError):
    """The server answered with an object other than the one asked for (never acted on)."""

    def __init__(self, asked: str, got: str):
        super().__init__(502, "UnexpectedObject", f"asked for {asked}, the answer was {got}; ignored")


def check_segment(value: object, what: str = "name") -> str:
    """`value` if it can be one path segment, else InvalidName.

    As client-go: "", "." and ".." and anything with "/" or "%" are refused (they would address
    another object or collection once the URL is normalised or decoded); control characters
    too. The rest is percent-encoded by `_path`, so "?" or "#" cannot cut the path short."""
    if not isinstance(value, str):
        raise InvalidName(what, value, "is not a string")
    if value in ("", ".", ".."):
        raise InvalidName(what, value, "may not be empty, '.' or '..'")
    for bad in ("/", "%"):
        if bad in value:
            raise InvalidName(what, value, f"may not contain {bad!r}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise InvalidName(what, value, "may not contain control characters")
    return value


def _seg(value: str, what: str) -> str:
    return quote(check_segment(value, what), safe="")


def load_configuration(kubeconfig: str | None = None):
    """A `kubernetes.client.Configuration` from a kubeconfig path; without one, in-cluster
    credentials, then the default kubeconfig."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    return cfg


_LEASE_PATH = re.compile(r"^/apis/coordination\.k8s\.io/[^/]+/(namespaces/[^/]+/)?leases(/[^/]+)?$")


def is_lease_path(path: str) -> bool:
    """A request for a coordination.k8s.io Lease, exactly: not a Canary, Deployment or Service
    whose name merely contains "leases"."""
    return _LEASE_PATH.match(path) is not None


def _path(api_version: str, plural: str | None = None, namespace: str | None = None,
          name: str | None = None, subresource: str | None = None) -> str:
    """The request path; every segment checked (`check_segment`) and percent-encoded.

    namespace None addresses the cluster scope (or all namespaces); name None the collection.
    An empty string is refused, never taken for "none" (it would widen the request)."""
    group, _, version = api_version.rpartition("/")
    base = f"/apis/{_seg(group, 'API group')}/{_seg(version, 'API version')}" if group \
        else f"/api/{_seg(version, 'API version')}"
    parts = [base]
    if namespace is not None:
        parts.append(f"namespaces/{_seg(namespace, 'namespace')}")
    if plural is not None:
        parts.append(_seg(plural, "resource"))
    if name is not None:
        parts.append(_seg(name, "name"))
    if subresource is not None:
        parts.append(_seg(subresource, "subresource"))
    return "/".join(parts)


def _required(name: str | None) -> None:
    if name is None:
        raise InvalidName("name", name, "is required")


def _check_answer(obj: dict | None, namespace: str | None, name: str) -> dict | None:
    """Refuse an object that is not the one asked for (a proxy, a broken or hostile server)."""
    if not obj:
        return obj
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    got_ns, got_name = meta.get("namespace"), meta.get("name")
    if got_name != name or (namespace is not None and got_ns != namespace):
        raise UnexpectedObject(f"{namespace}/{name}", f"{got_ns}/{got_name}")
    return obj


DEFAULT_CONNECTIONS = 16  # requests in flight at once; the rest wait their turn in order
LEASE_LANE = 4  # connections beyond those for Lease requests, which never wait behind ticks


class Kube:
    """Async CRUD on any resource, addressed by (apiVersion, plural, namespace, name)."""

    def __init__(self, host: str, *, auth: Callable[[], dict[str, str]] | None = None,
                 auth_may_block: bool = False, verify: ssl.SSLContext | bool = True, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, user_agent: str | None = None,
                 connections: int = DEFAULT_CONNECTIONS):
        self._auth = auth  # () -> {"authorization": "Bearer ..."}
        self._auth_may_block = auth_may_block  # a token refresh hook may read files or run programs
        # At most `connections` requests are in flight, each on a kept-alive connection; the rest
        # wait in a FIFO here, not in httpcore's pool. Measured (bench/kube_client.py, 200 at
        # once on the testbed): with httpx's default pool (100 open, 20 kept alive) nearly every
        # request opened a new TCP and TLS connection, and with 216 open the pool's own
        # bookkeeping, which grows with connections times waiting requests, took the client's
        # core; see docs/design.md, "The API client".
        # A Lease renewal skips the queue (a replica whose renewal waited behind a burst of
        # ticks would lose its Lease to a slow queue, not to a dead process).
        limits = httpx.Limits(max_connections=connections + LEASE_LANE,
                              max_keepalive_connections=connections + LEASE_LANE, keepalive_expiry=30.0)
        self._inflight = asyncio.Semaphore(connections)
        # a User-Agent per process tells replicas apart in the API server's audit log
        self._http = httpx.AsyncClient(base_url=host.rstrip("/"), verify=verify, timeout=timeout,
                                       transport=transport, limits=limits,
                                       headers={"User-Agent": user_agent} if user_agent else None)
        self._groups: dict[str, dict | None] = {}
        self.requests: dict[str, int] = {}  # verb -> number of requests sent
        # Fencing: called before every write; raises to refuse it (a replica that lost its Lease).
        self.write_guard: Callable[[str, str], None] | None = None  # (verb, path)
        # Write-through: called with every object a create/update/patch returned, so that watch
        # caches are never older than our own writes.
        self.on_written: Callable[[dict], None] | None = None
        # Timing: called after every request with (verb, path, seconds) (operator metrics).
        self.on_request: Callable[[str, str, float], None] | None = None
        self.rate: TokenBucket | None = None  # client-side QPS/burst (canary/ratelimit.py)
        self.max_429_retries = 3

    # ---- construction ------------------------------------------------------------

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, **kwargs) -> "Kube":
        """From a kubeconfig path; without one, in-cluster credentials, then the default kubeconfig."""
        cfg = load_configuration(kubeconfig)

        verify: ssl.SSLContext | bool = False
        if cfg.verify_ssl or cfg.cert_file:
            verify = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
            if not cfg.verify_ssl:
                verify.check_hostname = False
                verify.verify_mode = ssl.CERT_NONE
            if cfg.cert_file:
                verify.load_cert_chain(cfg.cert_file, cfg.key_file or None)

        def auth_headers() -> dict[str, str]:
            # the loaders store the token under "authorization" (older clients) or "BearerToken";
            # auth_settings() knows both and runs the token refresh hook (in-cluster, exec plugins)
            return {s["key"]: s["value"] for s in cfg.auth_settings().values()
                    if s.get("in") == "header" and s.get("value")}

        return cls(cfg.host, auth=auth_headers, auth_may_block=cfg.refresh_api_key_hook is not None,
                   verify=verify, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "Kube":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    @property
    def writes(self) -> int:
        return sum(self.requests.get(v, 0) for v in WRITE_VERBS)

    # ---- transport -----------------------------------------------------------------

    async def _request(self, verb: str, method: str, path: str, *, body: Any = None,
                       content_type: str = "application/json", params: dict | None = None,
                       allow_404: bool = False) -> dict | None:
        headers = {"Accept": "application/json"}
        if self._auth is not None:
            headers.update(await asyncio.to_thread(self._auth) if self._auth_may_block else self._auth())
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in range(self.max_429_retries + 1):
            if self.rate is not None:
                await self.rate.take()
            if verb in WRITE_VERBS and self.write_guard is not None:
                self.write_guard(verb, path)  # (again after a wait: the Lease may have lapsed)
            resp = await self._send(verb, method, path, body, headers, params)
            if resp.status_code != 429 or attempt == self.max_429_retries:
                break
            await asyncio.sleep(retry_after(resp.headers.get("Retry-After"), attempt))  # too many requests
        if resp.status_code == 404 and allow_404:
            return None
        if resp.status_code >= 400:
            raise _error(resp, method, path)
        if not resp.content:
            return {}
        out = resp.json()
        if verb in ("create", "update", "patch") and self.on_written is not None and isinstance(out, dict):
            self.on_written(out)
        return out

    async def _send(self, verb: str, method: str, path: str, body: Any, headers: dict,
                    params: dict | None) -> httpx.Response:
        self.requests[verb] = self.requests.get(verb, 0) + 1
        started = time.perf_counter()
        try:
            async with contextlib.nullcontext() if is_lease_path(path) else self._inflight:
                return await self._http.request(method, path, json=body, headers=headers, params=params)
        except httpx.TransportError as e:
            # a refused or dropped connection, a timeout: the same outcome as an API error (the
            # tick stops, the next one starts again from what the API server holds)
            raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {type(e).__name__}: {e}") from e
        finally:
            if self.on_request is not None:
                self.on_request(verb, path, time.perf_counter() - started)

    # ---- verbs ---------------------------------------------------------------------

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict | None:
        if name is None:
            raise InvalidName("name", name, "is required")
        out = await self._request("get", "GET", _path(api_version, plural, namespace, name),
                                  allow_404=True)
        return _check_answer(out, namespace, name)

    async def list(self, api_version: str, plural: str, namespace: str | None = None,
                   label_selector: str | None = None, resource_version: str | None = None) -> list[dict]:
        """`resource_version="0"`: whatever the API server's watch cache holds, with no read of
        etcd (a quorum LIST reads every object of the namespace from etcd and filters after)."""
        params = {"labelSelector": label_selector} if label_selector else {}
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        out = await self._request("list", "GET", _path(api_version, plural, namespace), params=params or None)
        items = list((out or {}).get("items") or [])
        if namespace is not None:
            for item in items:
                got = ((item.get("metadata") if isinstance(item, dict) else None) or {}).get("namespace")
                if got not in (None, namespace):
                    raise UnexpectedObject(f"{plural} of {namespace}", f"an item of namespace {got}")
        return items

    async def create(self, api_version: str, plural: str, namespace: str | None, body: dict) -> dict:
        return await self._request("create", "POST", _path(api_version, plural, namespace), body=body) or {}

    async def replace(self, api_version: str, plural: str, namespace: str | None, name: str,
                      body: dict) -> dict:
        _required(name)
        out = await self._request("update", "PUT", _path(api_version, plural, namespace, name),
                                  body=body)
        return _check_answer(out, namespace, name) or {}

    async def patch(self, api_version: str, plural: str, namespace: str | None, name: str,
                    body: Any, *, kind: PatchKind = "merge", subresource: str | None = None) -> dict:
        _required(name)
        out = await self._request("patch", "PATCH",
                                  _path(api_version, plural, namespace, name, subresource),
                                  body=body, content_type=_PATCH_TYPES[kind])
        return _check_answer(out, namespace, name) or {}

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str,
                     propagation: str | None = None) -> dict | None:
        """Delete; returns None when the object was already gone."""
        _required(name)  # without a name this would be a deletecollection
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation} \
            if propagation else None
        return await self._request("delete", "DELETE", _path(api_version, plural, namespace, name),
                                   body=body, allow_404=True)

    # ---- discovery -----------------------------------------------------------------

    async def _group(self, group: str) -> dict | None:
        if group not in self._groups:
            path = "/api" if group in ("", "core") else f"/apis/{group}"
            self._groups[group] = await self._request("discovery", "GET", path, allow_404=True)
        return self._groups[group]

    async def preferred_version(self, group: str) -> str | None:
        """The server's preferred version of an API group ("v1"), None if the group is not served."""
        doc = await self._group(group)
        if not doc:
            return None
        if "preferredVersion" in doc:
            return doc["preferredVersion"].get("version")
        versions = doc.get("versions") or []  # the core group answers with a plain list
        return versions[0] if versions and isinstance(versions[0], str) else None

    async def served(self, group: str, version: str) -> bool:
        doc = await self._group(group)
        if not doc:
            return False
        for v in doc.get("versions") or []:
            if (v if isinstance(v, str) else v.get("version")) == version:
                return True
        return False

    async def first_served(self, group: str, versions: "Sequence[str]") -> str | None:
        """The first of `versions` the server serves for `group` (as "group/version")."""
        for v in versions:
            if await self.served(group, v):
                return f"{group}/{v}"
        return None

    def forget_discovery(self) -> None:
        """Drop cached discovery (e.g. after CRDs were installed)."""
        self._groups.clear()


def _error(resp: httpx.Response, method: str, path: str) -> ApiError:
    try:
        status = resp.json()
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    message = status.get("message") or resp.text.strip() or f"{method} {path}"
    reason = status.get("reason") or resp.reason_phrase
    return ApiError(resp.status_code, reason, message)
