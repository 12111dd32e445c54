"""The cluster behind a small interface (a fake one in tests/unit/test_cli.py), the context
every subcommand gets, and finding a Canary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Protocol, TextIO

from canary.cli.watch import Change, Watcher
from canary.text import printable

from canary.cli.errors import (  # noqa: F401 - re-exported: the subcommands import them from here
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_TIMEOUT,
    GROUP,
    PLURAL,
    RESOURCE,
    VERSION,
    CliError,
    Forbidden,
    NotFound,
    NotServed,
)

DEFAULT_REQUEST_TIMEOUT = 30.0


class Api(Protocol):
    namespace: str  # the kubeconfig context's namespace (default: "default")
    user: str  # the kubeconfig context's user name ("" if unknown)

    def get_canary(self, namespace: str, name: str) -> dict: ...  # raises NotFound

    def list_canaries(self, namespace: str | None) -> list[dict]: ...  # None: all namespaces

    def get_deployment(self, namespace: str, name: str) -> dict | None: ...

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> dict: ...

    def watch(self, namespace: str | None, name: str | None, related: bool, idle: float) -> Iterator[Change | None]:
        """The Canaries (with `related`: also the Deployments and Pods of the namespace) as
        they change: first the current objects, then each change; None after `idle` seconds
        without one."""
        ...


@dataclass(frozen=True)
class Target:
    """Where to connect, from the global flags."""

    kubeconfig: str | None = None
    context: str | None = None
    as_user: str | None = None
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT  # None: no timeout

    @classmethod
    def of(cls, args: argparse.Namespace) -> Target:
        return cls(getattr(args, "kubeconfig", None), getattr(args, "context", None), getattr(args, "as_user", None),
                   getattr(args, "request_timeout", DEFAULT_REQUEST_TIMEOUT))


def _load(target: Target) -> tuple[Any, str, str, str]:
    """(client configuration, namespace, user, context name) of the kubeconfig, else in-cluster."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        contexts, current = config.list_kube_config_contexts(config_file=target.kubeconfig)
        if target.context:
            chosen = next((c for c in contexts or [] if c.get("name") == target.context), None)
            if chosen is None:
                names = ", ".join(sorted(str(c.get("name")) for c in contexts or [])) or "none"
                raise CliError(f'context "{target.context}" does not exist in the kubeconfig (contexts: {names})')
            current = chosen
        context = (current or {}).get("context") or {}
        config.load_kube_config(config_file=target.kubeconfig, context=target.context, client_configuration=cfg)
        return (cfg, context.get("namespace") or "default", context.get("user") or "",
                str((current or {}).get("name") or ""))
    except CliError:
        raise
    except Exception as e:  # ConfigException, OSError, a YAML error, a broken field: all one line
        reason = " ".join(str(e).split()) or type(e).__name__
        if target.kubeconfig or target.context:
            raise CliError(f"cannot use the kubeconfig {target.kubeconfig or ''}: {reason}".replace("  ", " ")) from None
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            raise CliError("no cluster configured: no usable kubeconfig (set --kubeconfig or $KUBECONFIG): "
                           f"{reason}") from None
        return cfg, "default", "", "in-cluster"


class KubeApi:
    """Api on the official client: kubeconfig (or $KUBECONFIG, or in-cluster) credentials."""

    def __init__(self, kubeconfig: str | None = None, target: Target | None = None):
        import urllib3
        from kubernetes import client

        target = target or Target(kubeconfig=kubeconfig)
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        cfg, self.namespace, self.user, self.context = _load(target)
        cfg.retries = 1
        self.server = cfg.host
        self.timeout = target.request_timeout
        self._client = client.ApiClient(cfg)
        if target.as_user:
            self._client.set_default_header("Impersonate-User", target.as_user)
            self.user = target.as_user
        self._custom = client.CustomObjectsApi(self._client)

    def _where(self) -> str:
        return f"context {self.context}" if self.context else f"server {self.server}"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as e:
            try:
                message = json.loads(e.body or "{}").get("message") or e.reason
            except (ValueError, AttributeError):
                message = e.reason
            if e.status == 404:
                raise NotFound(what) from None
            if e.status == 403:
                raise Forbidden(f"forbidden: {message}") from None
            if e.status == 401:
                raise CliError(f"unauthorized: the credentials of {self._where()} were refused ({message})") from None
            raise CliError(f"{what}: {message} (HTTP {e.status})") from None
        except HTTPError as e:
            reason = getattr(e, "reason", None) or e
            raise CliError(f"cannot reach the Kubernetes API server at {self.server}: {reason}") from None

    def not_served(self) -> NotServed:
        return NotServed(f"`{RESOURCE}` is not served by this cluster ({self._where()}): are the CRDs installed? "
                         "(canary crds | kubectl apply -f -)")

    def _served(self, namespace: str | None) -> bool:
        try:
            self.list_canaries(namespace, limit=1)
        except NotServed:
            return False
        except CliError:
            pass
        return True

    def get_canary(self, namespace: str, name: str) -> dict:
        what = f'canary "{name}" not found in namespace "{namespace}"'
        try:
            return self._call(what, lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self.timeout))
        except NotFound:
            if not self._served(namespace):
                raise self.not_served() from None
            raise

    def list_canaries(self, namespace: str | None, limit: int | None = None) -> list[dict]:
        extra: dict[str, Any] = {"_request_timeout": self.timeout}
        if limit:
            extra["limit"] = limit
        try:
            if namespace is None:
                out = self._call("listing canaries", lambda: self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, **extra))
            else:
                out = self._call(f'listing canaries in namespace "{namespace}"', lambda: (
                    self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **extra)))
        except NotFound:
            raise self.not_served() from None
        return list(out.get("items") or [])

    def get_deployment(self, namespace: str, name: str) -> dict | None:
        from kubernetes import client

        def read() -> dict:
            # the raw JSON, as the operator hashes it (not the client's model of it)
            resp: Any = client.AppsV1Api(self._client).read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=self.timeout)
            return json.loads(resp.data)

        try:
            return self._call(f"deployment {name}", read)
        except NotFound:
            return None

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> dict:
        body = {"metadata": {"annotations": annotations}}
        return self._call(f'canary "{name}" not found in namespace "{namespace}"', lambda: self._custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body, _request_timeout=self.timeout))

    def raw_get(self, path: str, query: list[tuple[str, str]] | None = None) -> Any:
        """GET a path of the API server, as JSON (version, discovery, lists)."""
        def get() -> Any:
            method, url, headers, body, post = self._client.param_serialize(
                "GET", path, query_params=query or [], header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"])
            resp = self._client.call_api(method, url, headers, body, post, _request_timeout=self.timeout)
            if resp.status >= 400:
                from kubernetes.client.exceptions import ApiException

                resp.read()
                raise ApiException(http_resp=resp)
            return json.loads(resp.read())
        return self._call(path, get)

    def watch(self, namespace: str | None, name: str | None, related: bool, idle: float) -> Iterator[Change | None]:
        return Watcher(self, namespace, name, related).run(idle)


@dataclass
class Ctx:
    """What every subcommand gets: the API (made on first use), output streams and the clock."""

    api_factory: Callable[[], Api]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    color: bool | None = None  # None: when `out` is a terminal and $NO_COLOR is unset
    _api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = self.api_factory()
        return self._api

    def print(self, text: str = "") -> None:
        # no escape sequence or control character from a status reaches the terminal
        print(printable(text), file=self.out, flush=True)

    def is_tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        return bool(isatty and isatty())


def namespace_of(ctx: Ctx, args: argparse.Namespace) -> str:
    return str(args.namespace or ctx.api.namespace or "default")


def get_canary(ctx: Ctx, namespace: str, name: str) -> dict:
    """The Canary, or a clear error that also says where a Canary of that name does exist."""
    try:
        return ctx.api.get_canary(namespace, name)
    except NotFound:
        pass
    elsewhere: list[str] = []
    try:
        elsewhere = sorted((c.get("metadata") or {}).get("namespace", "") for c in ctx.api.list_canaries(None)
                           if (c.get("metadata") or {}).get("name") == name)
    except CliError:
        pass
    message = f'canary "{name}" not found in namespace "{namespace}"'
    if len(elsewhere) == 1:
        message += f"; it exists in namespace {elsewhere[0]} (use -n {elsewhere[0]})"
    elif elsewhere:
        shown = ", ".join(elsewhere[:5]) + (", ..." if len(elsewhere) > 5 else "")
        message += f"; it exists in namespaces {shown} (use -n NAMESPACE)"
    raise NotFound(message)
