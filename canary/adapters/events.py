"""Kubernetes events on the Canary, one structured log line each.

Identical events are correlated, as client-go's EventCorrelator does: an event with the same
Canary (uid), type, reason and message as one posted before is not created again; the
existing Event's ``count`` goes up and its ``lastTimestamp`` moves (one merge PATCH). So a gate
closed overnight at ``interval: 1m`` is one ``WaitingApproval`` Event with ``count: 900``,
not 900 Events. The memory of what was posted is bounded (:data:`MAX_KEYS` entries, least
recently used first out); an entry forgotten, an operator restart or an Event deleted by the
API server's TTL only means a new Event is created.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

from canary.adapters.kube import ApiError, Kube
from canary.models import format_timestamp

log = logging.getLogger("canary.events")

COMPONENT = "canary-operator"
MAX_KEYS = 4096
MAX_MESSAGE = 1024

Key = tuple[str, str, str, str, str, str]


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
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


@dataclass
class _Posted:
    name: str
    count: int


class EventRecorder:
    def __init__(self, kube: Kube, max_keys: int = MAX_KEYS):
        self.kube = kube
        self.max_keys = max(1, max_keys)
        self._posted: OrderedDict[Key, _Posted] = OrderedDict()

    @staticmethod
    def key(canary: dict, type_: str, reason: str, message: str) -> Key:
        meta = canary.get("metadata", {})
        return (str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", "")),
                type_, reason, message[:MAX_MESSAGE])

    @property
    def remembered(self) -> int:
        return len(self._posted)

    async def emit(self, canary: dict, type_: str, reason: str, message: str, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        meta = canary.get("metadata", {})
        namespace = meta.get("namespace")
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            json.dumps(
                {
                    "canary": f"{namespace}/{meta.get('name')}",
                    "type": type_,
                    "reason": reason,
                    "message": message,
                }
            ),
        )
        key = self.key(canary, type_, reason, message)
        try:
            posted = self._posted.get(key)
            if posted is not None and await self._bump(namespace, posted, now):
                self._posted.move_to_end(key)
                return
            body = event_body(canary, type_, reason, message, now)
            await self.kube.create("v1", "events", namespace, body)
            self._remember(key, _Posted(body["metadata"]["name"], 1))
        except ApiError as e:  # an event that cannot be posted must never stop a release
            log.warning("could not post event for %s/%s: %s", namespace, meta.get("name"), e)

    async def _bump(self, namespace: str | None, posted: _Posted, now: datetime) -> bool:
        """count+1 and lastTimestamp on the Event posted before; False if it is gone."""
        patch = {"count": posted.count + 1, "lastTimestamp": format_timestamp(now)}
        try:
            await self.kube.patch("v1", "events", namespace, posted.name, patch)
        except ApiError as e:
            if e.status == 404:  # expired (the API server's event TTL) or deleted: post anew
                return False
            raise
        posted.count += 1
        return True

    def _remember(self, key: Key, posted: _Posted) -> None:
        self._posted[key] = posted
        self._posted.move_to_end(key)
        while len(self._posted) > self.max_keys:
            self._posted.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of a deleted Canary."""
        for key in [k for k in self._posted if k[0] == namespace and k[1] == name]:
            del self._posted[key]
