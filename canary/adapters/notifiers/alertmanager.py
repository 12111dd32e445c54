"""Alertmanager: an alert that fires while a release fails or waits, and resolves when it succeeds.

``address`` is Alertmanager's base URL (``http://alertmanager.monitoring:9093``); alerts are
POSTed to ``<address>/api/v2/alerts`` (API v2, Alertmanager >= 0.16), with a Bearer header when
the Secret has a ``token``. Warn and error alerts fire one alert each, identified by the labels

    alertname=CanaryRelease, canary, namespace, severity (warning | critical), cluster (if set)

with ``summary`` (the message), ``description`` (every fact) and the facts as annotations, and
``endsAt`` a day ahead (we send an alert once, not every evaluation as Prometheus does). An info
alert about a finished release (phase Succeeded or Initialized) resolves both severities by
posting them again with ``endsAt`` now; every other info alert is not sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from canary.models import format_timestamp

from . import text
from .base import Request, Target, bearer, register
from .info import AlertInfo

ALERTNAME = "CanaryRelease"
SEVERITIES = {"warn": "warning", "error": "critical"}
FIRING_FOR = timedelta(days=1)


def url(address: str) -> str:
    base = address.rstrip("/")
    return base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"


def labels(info: AlertInfo, severity: str) -> dict[str, str]:
    out = {"alertname": ALERTNAME, "canary": info.canary, "namespace": info.namespace, "severity": severity}
    if info.cluster:
        out["cluster"] = info.cluster
    return out


def annotations_of(info: AlertInfo) -> dict[str, str]:
    c = text.clean
    out = {"summary": c(info.message, 1024),
           "description": c("; ".join(f"{k}: {v}" for k, v in info.fields()), 4096),
           "phase": info.phase, "weight": str(info.weight), "target": info.target}
    for key, value in (("check", info.check), ("value", info.value_text), ("reason", info.reason),
                       ("images", info.image), ("revision", info.revision), ("link", info.link)):
        if value:
            out[key] = c(value, 1024)
    return out


def alerts(info: AlertInfo) -> list[dict[str, Any]]:
    """The body of the POST: firing, resolving, or nothing to say."""
    now = info.timestamp
    if info.resolved:
        return [{"labels": labels(info, sev), "annotations": annotations_of(info),
                 "startsAt": format_timestamp(now - timedelta(seconds=1)), "endsAt": format_timestamp(now)}
                for sev in SEVERITIES.values()]
    severity = SEVERITIES.get(info.severity)
    if severity is None:
        return []
    alert: dict[str, Any] = {"labels": labels(info, severity), "annotations": annotations_of(info),
                             "startsAt": format_timestamp(now), "endsAt": format_timestamp(now + FIRING_FOR)}
    if info.link:
        alert["generatorURL"] = info.link
    return [alert]


@register("alertmanager")
class Alertmanager:
    type = "alertmanager"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        body = alerts(info)
        return [Request(url(target.address), body, bearer(target))] if body else []
