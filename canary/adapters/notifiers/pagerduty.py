"""PagerDuty Events API v2: trigger an incident for a failing or waiting release, resolve it on success.

The Secret's ``token`` is the integration's routing key (required); ``address`` defaults to
``https://events.pagerduty.com/v2/enqueue``. One ``dedup_key`` per Canary
(``canary-operator/<cluster>/<namespace>/<name>``), so a failure and the success after it
are one incident. Info alerts other than a finished release are not sent.
"""

from __future__ import annotations

from typing import Any

from canary.models import format_timestamp

from . import text
from .base import Request, Target, register
from .info import AlertInfo

DEFAULT_ADDRESS = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = {"warn": "warning", "error": "error"}


def dedup_key(info: AlertInfo) -> str:
    return f"canary-operator/{info.cluster}/{info.namespace}/{info.canary}"


def event(info: AlertInfo, routing_key: str) -> dict[str, Any] | None:
    if info.resolved:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key(info)}
    severity = SEVERITIES.get(info.severity)
    if severity is None:
        return None
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(info),
        "client": "canary-operator",
        "payload": {
            "summary": text.clean(f"{info.subject}: {info.message}", 1024),
            "source": info.cluster or "canary-operator",
            "severity": severity,
            "timestamp": format_timestamp(info.timestamp),
            "component": info.target,
            "group": info.namespace,
            "class": info.check or "canary-release",
            "custom_details": {k: text.clean(v) for k, v in info.fields()},
        },
    }
    if info.link:
        body["links"] = [{"href": info.link, "text": "Details"}]
    return body


@register("pagerduty")
class PagerDuty:
    type = "pagerduty"
    default_address = DEFAULT_ADDRESS
    needs_token = "the integration's routing key"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        body = event(info, target.token or "")
        return [Request(target.address, body)] if body else []
