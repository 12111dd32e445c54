"""Alerts: the engine's ``Alert(severity, message)`` sent to chat rooms and webhooks.

A Canary lists ``spec.analysis.alerts`` entries (``name``, ``providerRef{name,namespace}``,
``severity``); each names an ``AlertProvider`` (Slack, MS Teams, Discord, Rocket.Chat,
Google Chat or a generic JSON webhook). This module has two halves:

* pure payload builders (:func:`describe` turns a Canary, its status and an alert into an
  :class:`AlertInfo`; ``*_payload`` and :func:`build_request` turn that into the HTTP body a
  provider expects), unit tested without I/O;
* :class:`Notifier`, which routes an alert to the matching entries by severity, resolves each
  AlertProvider (from a watch cache, through a lookup callable), reads the webhook address and
  token from the provider's Secret when ``secretRef`` is set, and posts.

Routing by severity (``info`` < ``warn`` < ``error``): an entry receives the alerts at or above
its own severity, so ``info`` gets everything, ``warn`` gets warn and error, ``error`` only
error. A missing severity means ``info`` (the CRD's documented default; Flagger's code matches
nothing for an empty severity, so such an entry never fires there).

Sending never raises and never holds up a release: :meth:`Notifier.on_alert` only queues or
schedules a task. Inside a tick held with :meth:`Notifier.hold`, alerts wait until the tick has
decided, so the message is built from the *new* status (the weight routed, and the check and
value that decided a rollback, from ``status.lastFailure``). Each POST has a 5 s timeout and is
retried twice on connection errors, HTTP 429 and 5xx; every other answer outside 2xx is a
failure, logged without the address (Slack and Teams URLs carry their secret in the path).
The Secret is read with one GET in the AlertProvider's namespace, only when an alert is sent,
and its content is never logged or kept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from canary.models import AlertProvider, AlertProviderSpec, Canary, CanaryStatus, format_timestamp
from canary.types import Alert

__all__ = [
    "AlertInfo",
    "Delivery",
    "Notifier",
    "Target",
    "build_request",
    "describe",
    "discord_url",
    "gchat_payload",
    "generic_payload",
    "msteams_payload",
    "routes_to",
    "rocket_payload",
    "slack_payload",
]

log = logging.getLogger(__name__)

SEVERITY_RANK = {"info": 0, "warn": 1, "error": 2}
TIMEOUT = 5.0
RETRIES = 2
BACKOFF = 0.5
MAX_BACKOFF = 2.0
TOTAL_TIMEOUT = 30.0  # one alert to one receiver, retries included

SLACK_COLORS = {"info": "good", "warn": "warning", "error": "danger"}
HEX_COLORS = {"info": "#0076D7", "warn": "#FFA500", "error": "#FF0000"}
DEFAULT_TITLE = "canary-operator"


def routes_to(entry_severity: str | None, alert_severity: str) -> bool:
    """True if an alerts entry with `entry_severity` receives an alert of `alert_severity`.

    info (or missing) -> every alert; warn -> warn and error; error -> error only.
    """
    wanted = SEVERITY_RANK.get(entry_severity or "info")
    got = SEVERITY_RANK.get(alert_severity, 0)
    return wanted is not None and got >= wanted


# ---- what an alert says -----------------------------------------------------------------------


@dataclass(frozen=True)
class AlertInfo:
    """Everything a message may show, taken from the Canary, its status and its target."""

    canary: str
    namespace: str
    severity: str
    message: str
    phase: str = ""
    weight: int = 0
    revision: str = ""
    image: str | None = None
    target: str = ""  # Kind/name.namespace
    check: str | None = None  # the deciding check (status.lastFailure; error alerts only)
    value: float | None = None
    failure: str | None = None  # status.lastFailure.message
    failed_checks: int = 0
    threshold: int = 1
    progress_deadline: int = 600
    traffic: str = ""
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def subject(self) -> str:
        """<name>.<namespace>, as Flagger titles its messages."""
        return f"{self.canary}.{self.namespace}"

    def fields(self) -> list[tuple[str, str]]:
        """(title, value) pairs shown under the message, in a stable order."""
        out = [("Target", self.target)]
        if self.image:
            out.append(("Image", self.image))
        if self.revision:
            out.append(("Revision", self.revision))
        out.append(("Phase", self.phase or "-"))
        out.append(("Weight", f"{self.weight}%"))
        out.append(("Failed checks", f"{self.failed_checks}/{self.threshold}"))
        if self.check:
            out.append(("Failed check", self.check))
        if self.value is not None:
            out.append(("Value", _num(self.value)))
        if self.failure and self.failure not in self.message:
            out.append(("Reason", self.failure))
        out.append(("Failed checks threshold", str(self.threshold)))
        out.append(("Progress deadline", f"{self.progress_deadline}s"))
        if self.traffic:
            out.append(("Traffic routing", self.traffic))
        return out


def _num(value: float) -> str:
    return f"{value:.6g}" if value != int(value) else str(int(value))


def traffic_routing(canary: Canary) -> str:
    """Flagger's "Traffic routing" text for the Canary's strategy."""
    analysis = canary.spec.analysis
    if analysis is None:
        return ""
    strategy = analysis.strategy
    if strategy == "ab":
        return "A/B Testing"
    if strategy == "bluegreen":
        return "Blue/Green"
    if analysis.step_weights:
        steps = ",".join(str(w) for w in analysis.step_weights)
        return f"Weight steps: {steps} max: {analysis.max_weight_value}"
    return f"Weight step: {analysis.step_weight or 0} max: {analysis.max_weight_value}"


def images_of(deployment: Mapping[str, Any] | None) -> str | None:
    """The container images of a Deployment's pod template, comma separated."""
    if not deployment:
        return None
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    images = [str(c.get("image")) for c in spec.get("containers") or [] if c.get("image")]
    return ", ".join(images) or None


def describe(canary: Canary, alert: Alert, deployment: Mapping[str, Any] | None = None,
             now: datetime | None = None, status: CanaryStatus | None = None) -> AlertInfo:
    """The facts of one alert. `status` defaults to the Canary's own; `deployment` is the target."""
    st = status if status is not None else (canary.status or CanaryStatus())
    spec = canary.spec
    # the deciding check belongs to failures only: a run may have had failed checks below the
    # threshold and still be promoted (lastFailure then stays in the status)
    failure = st.last_failure if alert.severity == "error" else None
    return AlertInfo(
        canary=canary.name,
        namespace=canary.namespace,
        severity=alert.severity,
        message=alert.message,
        phase=st.phase.value,
        weight=st.canary_weight,
        revision=st.last_applied_spec or "",
        image=images_of(deployment),
        target=f"{spec.target_ref.kind}/{spec.target_ref.name}.{canary.namespace}",
        check=failure.check if failure else None,
        value=failure.value if failure else None,
        failure=failure.message if failure else None,
        failed_checks=st.failed_checks,
        threshold=spec.analysis.threshold_value if spec.analysis else 1,
        progress_deadline=spec.progress_deadline,
        traffic=traffic_routing(canary),
        timestamp=now or datetime.now(timezone.utc),
    )


# ---- payloads (pure) ---------------------------------------------------------------------------


def slack_payload(info: AlertInfo, channel: str = "general", username: str = "flagger",
                  colors: Mapping[str, str] = SLACK_COLORS) -> dict[str, Any]:
    """Flagger's Slack shape: one attachment with the message and short=false fields."""
    return {
        "channel": channel,
        "username": username,
        "icon_emoji": ":rocket:",
        "attachments": [
            {
                "color": colors.get(info.severity, colors["info"]),
                "author_name": info.subject,
                "text": info.message,
                "mrkdwn_in": ["text"],
                "fields": [{"title": k, "value": v, "short": False} for k, v in info.fields()],
            }
        ],
    }


def rocket_payload(info: AlertInfo, channel: str = "general", username: str = "flagger") -> dict[str, Any]:
    """Rocket.Chat takes the Slack payload; only the colours differ."""
    return slack_payload(info, channel, username, colors=HEX_COLORS)


def discord_url(address: str) -> str:
    """Discord's Slack-compatible endpoint: the webhook URL with /slack appended."""
    base = address.rstrip("/")
    return base if base.endswith("/slack") else base + "/slack"


def msteams_payload(info: AlertInfo) -> dict[str, Any]:
    """A legacy Office 365 connector MessageCard."""
    return {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": HEX_COLORS.get(info.severity, HEX_COLORS["info"]).lstrip("#"),
        "summary": f"{info.subject}: {info.message}"[:200],
        "sections": [
            {
                "activityTitle": info.message,
                "activitySubtitle": info.subject,
                "facts": [{"name": k, "value": v} for k, v in info.fields()],
            }
        ],
    }


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def gchat_payload(info: AlertInfo, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """Google Chat card: a header and textParagraph widgets (message, then one per field)."""
    widgets = [{"textParagraph": {"text": _html(info.message)}}]
    widgets += [{"textParagraph": {"text": f"<b>{_html(k)}</b>: {_html(v)}"}} for k, v in info.fields()]
    return {
        "cards": [
            {
                "header": {"title": title, "subtitle": info.subject},
                "sections": [{"widgets": widgets}],
            }
        ]
    }


def generic_payload(info: AlertInfo) -> dict[str, Any]:
    """Our own JSON for any receiver: flat facts plus the same fields as the chat messages."""
    return {
        "canary": info.canary,
        "namespace": info.namespace,
        "severity": info.severity,
        "message": info.message,
        "phase": info.phase,
        "weight": info.weight,
        "revision": info.revision,
        "image": info.image,
        "target": info.target,
        "check": info.check,
        "value": info.value,
        "timestamp": format_timestamp(info.timestamp),
        "fields": dict(info.fields()),
    }


@dataclass(frozen=True)
class Target:
    """Where one alert goes: a resolved provider with its address (and token, proxy)."""

    name: str  # <namespace>/<provider name>, or "default" for --alert-webhook
    type: str
    address: str
    channel: str = "general"
    username: str = "flagger"
    proxy: str | None = None
    token: str | None = field(default=None, repr=False)


def build_request(target: Target, info: AlertInfo) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(url, JSON body, extra headers) of one alert for one receiver."""
    headers: dict[str, str] = {}
    url = target.address
    kind = target.type
    if kind == "slack":
        body = slack_payload(info, target.channel, target.username)
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
    elif kind == "discord":
        body = slack_payload(info, target.channel, target.username)
        url = discord_url(url)
    elif kind == "rocket":
        body = rocket_payload(info, target.channel, target.username)
    elif kind == "msteams":
        body = msteams_payload(info)
    elif kind in ("gchat", "googlechat"):
        body = gchat_payload(info)
    elif kind == "generic":
        body = generic_payload(info)
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
    else:
        raise ValueError(f"unsupported alert provider type {kind!r}")
    return url, body, headers


# ---- sending -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of one alert to one receiver (never carries the address)."""

    provider: str
    type: str
    ok: bool
    status_code: int | None = None
    message: str = ""


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RetryableStatus | httpx.ConnectTimeout):
        return True
    if isinstance(exc, httpx.TimeoutException):
        return False  # a read timeout: the receiver may have the message already
    return isinstance(exc, httpx.TransportError)


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
    client_factory: proxy URL or None -> httpx.AsyncClient (tests inject a transport here).
    on_delivery: called with every :class:`Delivery` (operator metrics).
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
    ):
        self.kube = kube
        self.providers = providers or (lambda ns, name: None)
        self.deployments = deployments
        self.default_url = default_url or None
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._client_factory = client_factory or self._default_client
        self._clients: dict[str | None, httpx.AsyncClient] = {}
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
            info = describe(canary, alert, deployment, self.clock())
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
        if not address:
            log.warning("alert provider %s has no address (spec.address or the secret's address key)", where)
            self._report(Delivery(where, spec.type, False, message="no address"))
            return None
        return Target(name=where, type=spec.type, address=address, channel=spec.channel_value,
                      username=spec.username_value, proxy=proxy or None, token=token)

    # ---- HTTP -------------------------------------------------------------------------------

    def _default_client(self, proxy: str | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(proxy=proxy, timeout=self.timeout)

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None or client.is_closed:
            client = self._client_factory(proxy)
            self._clients[proxy] = client
        return client

    def _report(self, delivery: Delivery) -> None:
        if self.on_delivery is not None:
            with contextlib.suppress(Exception):
                self.on_delivery(delivery)

    async def _deliver(self, target: Target, info: AlertInfo) -> Delivery:
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
            url, body, headers = build_request(target, info)
            client = self._client(target.proxy)
        except Exception as exc:
            return Delivery(target.name, target.type, False, message=f"{type(exc).__name__}: {exc}")
        attempts = 0

        async def post() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            response = await client.post(url, json=body, headers=headers, timeout=self.timeout)
            if response.status_code == 429 or response.status_code >= 500:
                raise _RetryableStatus(response)
            return response

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retries + 1),
                wait=wait_exponential(multiplier=self.backoff, max=MAX_BACKOFF),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    response = await post()
        except _RetryableStatus as exc:
            response = exc.response
        except httpx.HTTPError as exc:
            # the exception text may contain the URL: report the type and the attempts only
            return Delivery(target.name, target.type, False,
                            message=f"{type(exc).__name__} after {attempts} attempt(s)")
        code = response.status_code
        if 200 <= code < 300:
            return Delivery(target.name, target.type, True, code, f"HTTP {code}")
        snippet = " ".join(response.text.split())[:200]
        return Delivery(target.name, target.type, False, code,
                        f"HTTP {code} after {attempts} attempt(s)" + (f": {snippet}" if snippet else ""))

