"""Flagger-compatible webhooks (``spec.analysis.webhooks``).

Each hook gets ``POST <url>`` with ``Content-Type: application/json`` and the body
``{"name", "namespace", "phase", "checksum", "metadata"}``. A hook succeeds when the answer's
status is <= 202, exactly as Flagger (so 204 is a failure). Nothing here raises for a network
problem: every call ends in a :class:`~canary.types.WebhookResult`.

Behaviour, compared with Flagger:

* ``timeout`` (Go duration, default 10s) bounds each attempt. As in Flagger, a value shorter
  than 2 characters means 10s and an unparsable one fails the hook; ``0s`` means 10s here
  (in Go it would mean "no timeout", which would hang the tick).
* ``retries`` extra attempts are made on connection failures (incl. connect timeouts), HTTP 429
  and 5xx except 501, with a short exponential backoff (0.2 s doubling, at most 2 s; a
  ``Retry-After`` is honoured up to that cap). Flagger's HTTP library waits 1-30 s, too long
  for a tick. A read timeout is not retried: the hook may still be working.
* On failure the message carries the status code and the first 100 characters of the response
  body, cleaned of control characters (Flagger reports the whole body); the body of a successful
  call is never stored. URLs in messages lose their userinfo and query string (they may hold a
  token).
* Redirects are NOT followed (Go's client follows them): a 3xx answer fails the hook. A redirect
  would turn the operator into a proxy that fetches any address for the tenant.
* Every call goes through ``canary.adapters.http``: the egress policy (link-local and cloud
  metadata addresses refused by default, operator deny/allow lists, checked on the resolved
  address) and the one retry policy.
* Hooks of one type run one after the other in spec order and, like Flagger, stop early:
  gating types stop at the first failure, ``rollback`` at the first success (one is enough to
  roll back); ``post-rollout`` and ``event`` hooks are all called.
* ``metadata`` is always sent (``{}`` when the hook has none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from canary.adapters import http
from canary.duration import parse_duration
from canary.types import WebhookResult

__all__ = [
    "DEFAULT_TIMEOUT",
    "Hook",
    "aclose_shared_clients",
    "call_webhook",
    "call_webhooks",
    "hook_timeout",
    "payload_for",
    "send_event",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
DEFAULT_BACKOFF = 0.2
MAX_BACKOFF = http.MAX_BACKOFF
BODY_SNIPPET = http.SNIPPET
#: Keys of an event payload's metadata that the hook's own metadata cannot override.
EVENT_KEYS = ("eventMessage", "eventType", "timestamp")


# ---- reading a webhook entry (pydantic model or dict) ------------------------------------


@dataclass(frozen=True)
class Hook:
    """One ``analysis.webhooks[]`` entry, normalised."""

    name: str
    url: str
    type: str = "rollout"  # "" is normalised to rollout
    timeout: str | None = None
    retries: int = 0
    disable_tls: bool = False
    mute_alert: bool = False
    metadata: Mapping[str, str] | None = None

    @classmethod
    def of(cls, hook: Any) -> Hook:
        if isinstance(hook, Hook):
            return hook

        def get(*keys: str) -> Any:
            for key in keys:
                value = hook.get(key) if isinstance(hook, Mapping) else getattr(hook, key, None)
                if value is not None:
                    return value
            return None

        return cls(
            name=str(get("name") or ""),
            url=str(get("url") or ""),
            type=str(get("type") or "rollout"),
            timeout=get("timeout"),
            retries=int(get("retries") or 0),
            disable_tls=bool(get("disable_tls", "disableTLS")),
            mute_alert=bool(get("mute_alert", "muteAlert")),
            metadata=get("metadata"),
        )


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj


def _hooks(canary: Any) -> list[Hook]:
    return [Hook.of(h) for h in (_field(canary, "spec", "analysis", "webhooks") or [])]


def _name_ns(canary: Any) -> tuple[str, str]:
    meta = _field(canary, "metadata")
    return str(_field(meta, "name") or ""), str(_field(meta, "namespace") or "")


def hook_timeout(timeout: str | None) -> float:
    """Seconds for a hook's ``timeout`` (Flagger: shorter than 2 characters means 10s).

    Raises ValueError for an unparsable duration.
    """
    if not timeout or len(timeout) < 2:
        return DEFAULT_TIMEOUT
    seconds = parse_duration(timeout)
    return seconds if seconds > 0 else DEFAULT_TIMEOUT


def payload_for(canary: Any, phase: Any, checksum: str, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    name, namespace = _name_ns(canary)
    return {
        "name": name,
        "namespace": namespace,
        "phase": str(getattr(phase, "value", phase)),
        "checksum": checksum,
        "metadata": dict(metadata or {}),
    }


# ---- HTTP (canary.adapters.http: egress policy, no redirects, the one retry policy) ----------


async def aclose_shared_clients() -> None:
    """Close the shared HTTP clients of the running loop (call on operator shutdown)."""
    await http.aclose_shared_clients()


async def call_webhook(
    hook: Any,
    payload: Mapping[str, Any],
    client: httpx.AsyncClient | None = None,
    *,
    backoff: float = DEFAULT_BACKOFF,
) -> WebhookResult:
    """POST `payload` to one hook; never raises for HTTP or network problems.

    The body of a successful answer is never kept; of a failed one the first 100 characters,
    cleaned of control characters. A redirect is a failure (3xx), never followed."""
    hook = Hook.of(hook)
    where = f"webhook {http.clean(hook.name)} ({http.safe_url(hook.url)})"
    try:
        timeout = hook_timeout(hook.timeout)
    except ValueError as exc:
        return WebhookResult(hook.name, hook.type, ok=False, message=f"{where}: invalid timeout: {http.clean(str(exc))}")
    conn = client if client is not None and not hook.disable_tls else http.client(verify=not hook.disable_tls)
    attempts = http.Attempts()
    tries = "" if hook.retries == 0 else " after {n} attempt(s)"
    try:
        response = await http.request(conn, "POST", hook.url, json=dict(payload),
                                      headers={"Content-Type": "application/json"}, timeout=timeout,
                                      retries=hook.retries, backoff=backoff, attempts=attempts)
    except httpx.TimeoutException as exc:
        return WebhookResult(
            hook.name, hook.type, ok=False,
            message=f"{where} timed out after {timeout:g}s ({type(exc).__name__})" + tries.format(n=attempts.count),
        )
    except Exception as exc:  # connection refused, DNS, egress policy, invalid URL, TLS ...
        reason = http.snippet(str(exc) or type(exc).__name__, 200)
        return WebhookResult(
            hook.name, hook.type, ok=False,
            message=f"{where} failed: {type(exc).__name__}: {reason}" + tries.format(n=attempts.count),
        )
    code = response.status_code
    if code <= 202:  # the body of a success is nobody's business: never stored
        return WebhookResult(hook.name, hook.type, ok=True, status_code=code, message=f"{where} returned {code}")
    body = http.snippet(response.text, BODY_SNIPPET)
    if 300 <= code < 400:
        body = "redirects are not followed"
    return WebhookResult(
        hook.name, hook.type, ok=False, status_code=code,
        message=f"{where} returned {code}" + tries.format(n=attempts.count) + (f": {body}" if body else ""),
    )


def _should_stop(hook_type: str, result: WebhookResult) -> bool:
    if hook_type in ("post-rollout", "event"):
        return False
    if hook_type == "rollback":
        return result.ok
    return not result.ok


async def call_webhooks(
    canary: Any,
    hooks_of_type: str,
    phase: Any,
    checksum: str,
    client: httpx.AsyncClient | None = None,
    *,
    stop_early: bool = True,
    backoff: float = DEFAULT_BACKOFF,
) -> tuple[WebhookResult, ...]:
    """Call the canary's hooks of one type ("" = rollout) one after the other, in spec order.

    With `stop_early` (the default, as Flagger) gating types stop at the first failure and
    ``rollback`` at the first success, so the tuple may be shorter than the list of hooks.
    """
    wanted = hooks_of_type or "rollout"
    results: list[WebhookResult] = []
    for hook in _hooks(canary):
        if hook.type != wanted:
            continue
        result = await call_webhook(hook, payload_for(canary, phase, checksum, hook.metadata), client,
                                    backoff=backoff)
        if not result.ok:
            log.info("%s", result.message)
        results.append(result)
        if stop_early and _should_stop(wanted, result):
            break
    return tuple(results)


async def send_event(
    canary: Any,
    message: str,
    event_type: str,
    phase: Any,
    checksum: str,
    client: httpx.AsyncClient | None = None,
    *,
    default_url: str | None = None,
    now: datetime | None = None,
    backoff: float = DEFAULT_BACKOFF,
) -> tuple[WebhookResult, ...]:
    """Post a Kubernetes event to the canary's ``event`` hooks (or `default_url` if it has none).

    The metadata gets ``eventMessage``, ``eventType`` (Normal|Warning) and ``timestamp`` (unix
    milliseconds as a string); the hook's own metadata cannot override them. Failures are
    logged and returned, never raised.
    """
    hooks = [h for h in _hooks(canary) if h.type == "event"]
    if not hooks and default_url:
        hooks = [Hook(name="event-webhook", url=default_url, type="event")]
    millis = int(now.timestamp() * 1000) if now is not None else time.time_ns() // 1_000_000
    results: list[WebhookResult] = []
    for hook in hooks:
        metadata = dict(hook.metadata or {})
        metadata.update(eventMessage=message, eventType=event_type, timestamp=str(millis))
        result = await call_webhook(hook, payload_for(canary, phase, checksum, metadata), client,
                                    backoff=backoff)
        if not result.ok:
            log.warning("event %s", result.message)
        results.append(result)
    return tuple(results)
