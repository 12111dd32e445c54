"""Our own JSON for any receiver: flat facts plus the same fields as the chat messages.

The receiver is a program, so nothing is escaped; control characters are still dropped.
"""

from __future__ import annotations

from typing import Any

from canary.models import format_timestamp

from . import text
from .base import Request, Target, bearer, register
from .info import AlertInfo


def payload(info: AlertInfo) -> dict[str, Any]:
    c = text.clean
    return {
        "canary": info.canary,
        "namespace": info.namespace,
        "cluster": info.cluster,
        "severity": info.severity,
        "message": c(info.message),
        "phase": info.phase,
        "weight": info.weight,
        "revision": info.revision,
        "image": info.image,
        "target": info.target,
        "check": info.check,
        "value": info.value,
        "link": info.link,
        "timestamp": format_timestamp(info.timestamp),
        "fields": {k: c(v) for k, v in info.fields()},
    }


@register("generic")
class Generic:
    type = "generic"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, payload(info), bearer(target))]
