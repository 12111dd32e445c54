"""Kubernetes events on the Canary, one structured log line each, mirrored to `event` webhooks."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

from canary.adapters.kube import ApiError, Kube
from canary.models import format_timestamp

log = logging.getLogger("canary.events")

COMPONENT = "canary-operator"


def event_body(canary: dict, type_: str, reason: str, message: str, now: datetime) -> dict:
    meta = canary.get("metadata", {})
    ts = format_timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": canary.get("apiVersion", "canary.dev/v1beta1"),
            "kind": "Canary",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, kube: Kube):
        self.kube = kube

    async def emit(self, canary: dict, type_: str, reason: str, message: str, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        meta = canary.get("metadata", {})
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            json.dumps(
                {
                    "canary": f"{meta.get('namespace')}/{meta.get('name')}",
                    "type": type_,
                    "reason": reason,
                    "message": message,
                }
            ),
        )
        try:
            await self.kube.create("v1", "events", meta.get("namespace"), event_body(canary, type_, reason, message, now))
        except ApiError as e:  # an event that cannot be posted must never stop a release
            log.warning("could not post event for %s/%s: %s", meta.get("namespace"), meta.get("name"), e)
