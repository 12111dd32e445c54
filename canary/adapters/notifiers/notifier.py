"""Sending alerts: routing by severity, resolving AlertProviders, one HTTP client per proxy.

:class:`Notifier` routes an engine ``Alert(severity, message)`` to the Canary's
``spec.analysis.alerts`` entries whose severity it reaches (``info`` < ``warn`` < ``error``; a
missing severity means ``info``), resolves each AlertProvider (from a watch cache, through a
lookup callable), reads the webhook address and token from the provider's Secret when
``secretRef`` is set (one GET in the provider's namespace, only when an alert is sent; never
logged or kept), renders the provider's templates, and posts what the provider module builds.

Sending never raises and never holds up a release: :meth:`Notifier.on_alert` only queues or
schedules a task. Inside a tick held with :meth:`Notifier.hold`, alerts wait until the tick has
decided, so the message is built from the *new* status. HTTP goes through the project's one
HTTP layer (:mod:`canary.adapters.http`): its egress policy (link-local and metadata addresses
refused, the operator's deny/allow lists, checked on the resolved address), no redirects (a
3xx is a failure) and its retry policy; each POST has a 5 s timeout and is retried twice on
connection errors, 429 and 5xx. Every answer outside 2xx is a failure, logged without the
address (Slack and Teams URLs carry their secret in the path) and without the receiver's answer
(a remote body is never embedded in a message).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from canary.adapters import http
from canary.models import AlertProvider, AlertProviderSpec, Canary, CanaryStatus
from canary.types import Alert

from .base import Request, Target, provider_for
from .info import AlertInfo, describe, routes_to
from .text import AlertTemplateError, render_link, render_message

__all__ = ["Delivery", "Notifier"]

log = logging.getLogger("canary.adapters.notifiers")

TIMEOUT = 5.0
RETRIES = 2
BACKOFF = 0.5
TOTAL_TIMEOUT = 30.0  # one alert to one receiver, retries included


@dataclass(frozen=True)
class Delivery:
    """The outcome of one alert to one receiver (never carries the address)."""

    provider: str
    type: str
    ok: bool
    status_code: int | None = None
    message: str = ""


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _decode(secret: Mapping[str, Any], key: str) -> str | None:
    value = (secret.get("data") or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value).decode().strip() or None
    except (ValueError, UnicodeDecodeError):
        return None


Lookup = Callable[[str, str], Mapping[str, Any] | None]
ClientFactory = Callable[[str | None], httpx.AsyncClient]


class Notifier:
    """Routes engine alerts to AlertProviders and posts them; see the module docstring.

    kube: used for one Secret GET per alert and provider with a secretRef (``get`` coroutine).
    providers: (namespace, name) -> AlertProvider object, e.g. a watch cache.
    deployments: (namespace, name) -> Deployment, to show the target's image.
    default_url: the generic webhook used when a Canary has no ``alerts`` (``--alert-webhook``).
    client_factory: proxy URL or None -> httpx.AsyncClient (tests inject a transport here);
    default: the shared clients of :func:`canary.adapters.http.client` (egress policy, no redirects).
    on_delivery: called with every :class:`Delivery` (operator metrics).
    cluster_name: ``--cluster-name``, shown in every message.
    """

    def __init__(
        self,
        kube: Any = None,
        providers: Lookup | None = None,
        deployments: Lookup | None = None,
        *,
        default_url: str | None = None,
        timeout: float = TIMEOUT,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], datetime] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
        cluster_name: str = "",
    ):
        self.cluster_name = cluster_name or ""
        self.kube = kube
        self.providers = providers or (lambda ns, name: None)
        self.deployments = deployments
        self.default_url = default_url or None
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._client_factory = client_factory
        self._clients: dict[str | None, httpx.AsyncClient] = {}  # only those of client_factory
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.on_delivery = on_delivery
        self._tasks: set[asyncio.Task] = set()
        self._held: dict[tuple[str, str], list[tuple[Canary, Alert]]] = {}
        self._decided: dict[tuple[str, str], CanaryStatus] = {}

    # ---- the operator's hooks -------------------------------------------------------------

    async def on_alert(self, canary: Canary, alert: Alert) -> None:
        """Deps.on_alert: queue while the tick is held, otherwise send in the background."""
        key = (canary.namespace, canary.name)
        if key in self._held:
            self._held[key].append((canary, alert))
        else:
            self.submit(canary, alert)

    def decided(self, canary: Canary, status: CanaryStatus) -> None:
        """Deps.on_decision: remember the tick's new status for the alerts it raised."""
        key = (canary.namespace, canary.name)
        if key in self._held:
            self._decided[key] = status

    @contextlib.contextmanager
    def hold(self, obj: Mapping[str, Any]) -> Iterator[None]:
        """Around one tick of `obj`: its alerts are sent when the tick ends, with the status the
        tick decided (or the Canary's own if the tick wrote none)."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._held[key] = []
        try:
            yield
        finally:
            queued = self._held.pop(key, [])
            status = self._decided.pop(key, None)
            for canary, alert in queued:
                if status is not None:
                    canary = canary.model_copy(update={"status": status})
                self.submit(canary, alert)

    def submit(self, canary: Canary, alert: Alert) -> asyncio.Task:
        """Send in a background task (kept in a registry until done)."""
        task = asyncio.create_task(self.notify(canary, alert), name=f"alert:{canary.namespace}/{canary.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for alerts in flight (at most `timeout` seconds), then cancel the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for t in late:
            t.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)

    async def aclose(self, timeout: float = 5.0) -> None:
        await self.drain(timeout)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()

    # ---- routing --------------------------------------------------------------------------

    async def notify(self, canary: Canary, alert: Alert) -> list[Delivery]:
        """Send one alert to every receiver it is routed to. Never raises."""
        try:
            deployment = None
            if self.deployments is not None:
                deployment = self.deployments(canary.namespace, canary.spec.target_ref.name)
            info = describe(canary, alert, deployment, self.clock(), cluster=self.cluster_name)
            targets = await self.targets(canary, alert.severity)
            if not targets:
                return []
            results = await asyncio.gather(*(self._deliver(t, info) for t in targets),
                                           return_exceptions=True)
        except Exception as exc:  # a bug here must never reach the reconciler
            log.exception("alert for %s/%s failed: %s", canary.namespace, canary.name, exc)
            return []
        out: list[Delivery] = []
        for target, result in zip(targets, results):
            if isinstance(result, BaseException):
                result = Delivery(target.name, target.type, False, message=f"{type(result).__name__}: {result}")
            out.append(result)
        return out

    async def targets(self, canary: Canary, severity: str) -> list[Target]:
        """The receivers of an alert of `severity` (providers that cannot be resolved are logged
        and reported to `on_delivery`, then left out)."""
        analysis = canary.spec.analysis
        entries = (analysis.alerts if analysis else None) or []
        if not entries:
            if self.default_url:
                return [Target(name="default", type="generic", address=self.default_url)]
            return []
        out: list[Target] = []
        for entry in entries:
            if not routes_to(entry.severity, severity):
                continue
            ns = entry.provider_ref.namespace or canary.namespace
            target = await self.resolve(ns, entry.provider_ref.name)
            if target is not None:
                out.append(target)
        return out

    async def resolve(self, namespace: str, name: str) -> Target | None:
        """An AlertProvider as a Target, reading its Secret if it has one; None (logged) if unusable."""
        where = f"{namespace}/{name}"
        obj = self.providers(namespace, name)
        if obj is None:
            log.warning("alert provider %s not found", where)
            self._report(Delivery(where, "unknown", False, message="alert provider not found"))
            return None
        try:
            spec: AlertProviderSpec = AlertProvider.from_obj(dict(obj)).spec
        except ValidationError as exc:
            log.warning("alert provider %s is invalid: %s", where, exc.errors()[0].get("msg"))
            self._report(Delivery(where, "unknown", False, message="invalid alert provider"))
            return None
        try:
            provider = provider_for(spec.type)
        except ValueError as exc:
            log.warning("alert provider %s: %s", where, exc)
            self._report(Delivery(where, spec.type, False, message="unsupported type"))
            return None
        address, token, proxy = spec.address, None, spec.proxy
        if spec.secret_ref is not None:
            secret = None
            try:
                if self.kube is not None:
                    secret = await self.kube.get("v1", "secrets", namespace, spec.secret_ref.name)
            except Exception as exc:  # never log the Secret, only that it could not be read
                log.warning("alert provider %s: cannot read secret %s: %s", where, spec.secret_ref.name,
                            type(exc).__name__)
            if secret is None:
                log.warning("alert provider %s: secret %s/%s not found", where, namespace, spec.secret_ref.name)
            else:
                address = _decode(secret, "address") or address
                token = _decode(secret, "token")
                proxy = _decode(secret, "proxy") or proxy
        address = address or getattr(provider, "default_address", None)
        needs = getattr(provider, "needs_token", None)
        if needs and not token:
            log.warning("alert provider %s (%s) needs the Secret key token: %s", where, spec.type, needs)
            self._report(Delivery(where, spec.type, False, message="no token"))
            return None
        if not address:
            log.warning("alert provider %s has no address (spec.address or the secret's address key)", where)
            self._report(Delivery(where, spec.type, False, message="no address"))
            return None
        return Target(name=where, type=spec.type, address=address, channel=spec.channel_value,
                      username=spec.username_value, proxy=proxy or None, token=token,
                      template=spec.template, link_template=spec.link_template)

    # ---- HTTP -------------------------------------------------------------------------------

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        if self._client_factory is None:  # the shared, policed clients (closed on operator shutdown)
            return http.client(proxy=proxy, timeout=self.timeout)
        client = self._clients.get(proxy)
        if client is None or client.is_closed:
            client = self._client_factory(proxy)
            self._clients[proxy] = client
        return client

    def _report(self, delivery: Delivery) -> None:
        if self.on_delivery is not None:
            with contextlib.suppress(Exception):
                self.on_delivery(delivery)

    def _render(self, target: Target, info: AlertInfo) -> AlertInfo:
        """The provider's link and message templates applied; a bad one is reported, the default kept."""
        for attr, fn, key in (("link_template", render_link, "link"), ("template", render_message, "message")):
            template = getattr(target, attr)
            if not template:
                continue
            try:
                info = info.with_(**{key: fn(template, info)})
            except AlertTemplateError as exc:
                log.warning("alert provider %s: bad %s, sending the default message", target.name, exc)
                self._report(Delivery(target.name, target.type, False, message=f"bad {exc}"))
        return info

    async def _deliver(self, target: Target, info: AlertInfo) -> Delivery:
        info = self._render(target, info)
        try:
            result = await asyncio.wait_for(self._post(target, info), TOTAL_TIMEOUT)
        except asyncio.TimeoutError:
            result = Delivery(target.name, target.type, False, message="timed out")
        except Exception as exc:
            result = Delivery(target.name, target.type, False, message=f"{type(exc).__name__}: {exc}")
        if result.ok:
            log.info("alert %s for %s sent to %s (%s)", info.severity, info.subject, target.name, target.type)
        else:
            log.warning("alert %s for %s to %s (%s, host %s) failed: %s", info.severity, info.subject,
                        target.name, target.type, _host(target.address), result.message)
        self._report(result)
        return result

    async def _post(self, target: Target, info: AlertInfo) -> Delivery:
        try:
            requests = provider_for(target.type).requests(target, info)
            client = self._client(target.proxy)
        except Exception as exc:
            return Delivery(target.name, target.type, False, message=f"{type(exc).__name__}: {exc}")
        if not requests:
            return Delivery(target.name, target.type, True, None, "nothing to send for this alert")
        result = Delivery(target.name, target.type, True)
        for request in requests:
            result = await self._send(client, target, request)
            if not result.ok:
                break
        return result

    async def _send(self, client: httpx.AsyncClient, target: Target, request: Request) -> Delivery:
        attempts = http.Attempts()
        try:
            response = await http.request(client, "POST", request.url, json=request.body, headers=request.headers,
                                          retries=self.retries, backoff=self.backoff, timeout=self.timeout,
                                          attempts=attempts)
        except http.EgressDenied:
            return Delivery(target.name, target.type, False,
                            message=f"refused by the egress policy (host {_host(request.url)})")
        except httpx.HTTPError as exc:
            # the exception text may contain the URL: report the type and the attempts only
            return Delivery(target.name, target.type, False,
                            message=f"{type(exc).__name__} after {attempts.count} attempt(s)")
        code = response.status_code
        if 200 <= code < 300:
            return Delivery(target.name, target.type, True, code, f"HTTP {code}")
        # the receiver's answer is not ours to repeat (it may be anything): the status code only
        note = " (redirects are not followed)" if 300 <= code < 400 else ""
        return Delivery(target.name, target.type, False, code,
                        f"HTTP {code} after {attempts.count} attempt(s){note}")
