"""A small asynchronous Kubernetes API client.

The operator runs inside an asyncio loop, so every call here is a coroutine on top of
`httpx.AsyncClient`. Credentials come from the official `kubernetes` package's loaders
(kubeconfig file or in-cluster service account), which fill a
`kubernetes.client.Configuration`; we only read host, token, client certificate and CA
from it. Objects are plain dicts as the API server sends them.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any, Callable, Literal

import httpx

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


def _path(api_version: str, plural: str | None = None, namespace: str | None = None,
          name: str | None = None, subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    if plural:
        parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    """Async CRUD on any resource, addressed by (apiVersion, plural, namespace, name)."""

    def __init__(self, host: str, *, auth: Callable[[], dict[str, str]] | None = None,
                 auth_may_block: bool = False, verify: ssl.SSLContext | bool = True, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, user_agent: str | None = None):
        self._auth = auth  # () -> {"authorization": "Bearer ..."}
        self._auth_may_block = auth_may_block  # a token refresh hook may read files or run programs
        # a User-Agent per process tells replicas apart in the API server's audit log
        self._http = httpx.AsyncClient(base_url=host.rstrip("/"), verify=verify, timeout=timeout,
                                       transport=transport,
                                       headers={"User-Agent": user_agent} if user_agent else None)
        self._groups: dict[str, dict | None] = {}
        self.requests: dict[str, int] = {}  # verb -> number of requests sent

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
        self.requests[verb] = self.requests.get(verb, 0) + 1
        resp = await self._http.request(method, path, json=body, headers=headers, params=params)
        if resp.status_code == 404 and allow_404:
            return None
        if resp.status_code >= 400:
            raise _error(resp, method, path)
        if not resp.content:
            return {}
        return resp.json()

    # ---- verbs ---------------------------------------------------------------------

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict | None:
        return await self._request("get", "GET", _path(api_version, plural, namespace, name),
                                   allow_404=True)

    async def list(self, api_version: str, plural: str, namespace: str | None = None,
                   label_selector: str | None = None) -> list[dict]:
        params = {"labelSelector": label_selector} if label_selector else None
        out = await self._request("list", "GET", _path(api_version, plural, namespace), params=params)
        return list((out or {}).get("items") or [])

    async def create(self, api_version: str, plural: str, namespace: str | None, body: dict) -> dict:
        return await self._request("create", "POST", _path(api_version, plural, namespace), body=body)

    async def replace(self, api_version: str, plural: str, namespace: str | None, name: str,
                      body: dict) -> dict:
        return await self._request("update", "PUT", _path(api_version, plural, namespace, name),
                                   body=body)

    async def patch(self, api_version: str, plural: str, namespace: str | None, name: str,
                    body: Any, *, kind: PatchKind = "merge", subresource: str | None = None) -> dict:
        return await self._request("patch", "PATCH",
                                   _path(api_version, plural, namespace, name, subresource),
                                   body=body, content_type=_PATCH_TYPES[kind])

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str,
                     propagation: str | None = None) -> dict | None:
        """Delete; returns None when the object was already gone."""
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

    async def first_served(self, group: str, versions: list[str] | tuple[str, ...]) -> str | None:
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
