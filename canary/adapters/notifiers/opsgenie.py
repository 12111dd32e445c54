"""Opsgenie Alert API: create an alert for a failing or waiting release, close it on success.

The Secret's ``token`` is the API integration key (sent as ``Authorization: GenieKey ...``,
required); ``address`` defaults to ``https://api.opsgenie.com/v2/alerts`` (use
``https://api.eu.opsgenie.com/v2/alerts`` for the EU instance). One ``alias`` per Canary, so
Opsgenie de-duplicates repeated alerts and the success closes them. Info alerts other than a
finished release are not sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from . import text
from .base import Request, Target, register
from .info import AlertInfo

DEFAULT_ADDRESS = "https://api.opsgenie.com/v2/alerts"
PRIORITIES = {"warn": "P3", "error": "P2"}


def alias(info: AlertInfo) -> str:
    return f"canary-operator/{info.cluster}/{info.namespace}/{info.canary}"[:512]


def create(info: AlertInfo) -> dict[str, Any]:
    tags = ["canary-operator", info.namespace] + ([info.cluster] if info.cluster else [])
    details = {k: text.clean(v, 1000) for k, v in info.fields()}
    if info.link:
        details["Link"] = info.link
    return {
        "message": text.clean(f"{info.subject}: {info.message}", 130),
        "alias": alias(info),
        "description": text.clean("\n".join([info.message] + [f"{k}: {v}" for k, v in info.fields()]), 15000),
        "priority": PRIORITIES[info.severity],
        "tags": tags,
        "details": details,
        "entity": info.target[:512],
        "source": "canary-operator",
    }


@register("opsgenie")
class Opsgenie:
    type = "opsgenie"
    default_address = DEFAULT_ADDRESS
    needs_token = "the API integration key"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        headers = {"Authorization": f"GenieKey {target.token}"} if target.token else {}
        base = target.address.rstrip("/")
        if info.resolved:
            close = f"{base}/{quote(alias(info), safe='')}/close?identifierType=alias"
            return [Request(close, {"source": "canary-operator", "note": text.clean(info.message, 1000)}, headers)]
        if info.severity not in PRIORITIES:
            return []
        return [Request(base, create(info), headers)]
