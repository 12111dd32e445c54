"""What the dashboard knows: ONE watch of the Canaries (and one of the Deployments and Pods
behind their images and ready counts), applied to the CLI's Store, and the changes it makes to
the pages as numbered events that every browser's server-sent-event stream reads. However many
browsers are open, the API server sees the same two watches: nothing asks it per browser, and
nothing polls.

The routed weight is read from the VirtualService or HTTPRoute when a Canary changes (as the
terminal view reads it), once for all browsers."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from canary.cli.api import Api, CliError
from canary.cli.dashboard.model import detail, summary
from canary.cli.live import routed_weight
from canary.cli.store import Key, Store
from canary.cli.views import View
from canary.cli.watch import Change, Watcher

log = logging.getLogger(__name__)

HISTORY = 2000  # events kept for streams that fell behind (further behind: a new snapshot)
IDLE = 5.0


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str  # "canary" (a card changed), "detail" (a Canary's page changed), "deleted", "problem"
    key: str  # "namespace/name" ("" for a problem)
    data: str  # JSON of a problem or a deletion; a card or page is read when sent (`current`): the
    # history holds no copies of them, and a stream sends only the latest of several changes


class RelatedWatcher(Watcher):
    """The Deployments and Pods of one namespace (or of all): the images and ready pods."""

    def __init__(self, api: Any, namespace: str | None):
        super().__init__(api, namespace, None, related=True)

    def _sources(self) -> list[tuple[str, Any, dict[str, Any]]]:
        from kubernetes import client

        apps, core = client.AppsV1Api(self.api._client), client.CoreV1Api(self.api._client)
        if self.namespace is None:
            return [("deployment", apps.list_deployment_for_all_namespaces, {}),
                    ("pod", core.list_pod_for_all_namespaces, {})]
        return [("deployment", apps.list_namespaced_deployment, {"namespace": self.namespace}),
                ("pod", core.list_namespaced_pod, {"namespace": self.namespace})]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class State:
    """The Store the watches fill, and the events of what changed on the pages."""

    def __init__(self, api: Api, namespace: str | None):
        self.api, self.namespace = api, namespace
        self.store = Store()
        self.routed: dict[Key, int | None] = {}
        self._versions: dict[Key, str] = {}
        self.cards: dict[Key, str] = {}  # the JSON last sent, per Canary
        self.pages: dict[Key, str] = {}
        self.cond = threading.Condition()
        self.events: deque[Event] = deque(maxlen=HISTORY)
        self.seq = 0
        self.error = ""  # why the watch of the Canaries stopped ("": it has not)
        self.related_error = ""  # why the images and pods are not shown
        self.stopped = threading.Event()

    # ---- feeding ---------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """One change from a watch: the Store, then the pages it touches."""
        routed: int | None = None
        key = _key(change.obj)
        fresh = False
        if change.kind == "canary" and change.type != "DELETED":
            version = str((change.obj.get("metadata") or {}).get("resourceVersion", ""))
            fresh = version != self._versions.get(key)
            if fresh:  # outside the lock: one GET of the route, not one per browser
                routed = routed_weight(self.api, View.of(change.obj))
        with self.cond:
            self.store.apply(change)
            if change.kind == "canary":
                if change.type == "DELETED":
                    self._versions.pop(key, None)
                    self.routed.pop(key, None)
                    self.cards.pop(key, None)
                    self.pages.pop(key, None)
                    self._emit("deleted", key, json.dumps({"key": "/".join(key)}))
                    return
                if fresh:
                    self._versions[key] = str((change.obj.get("metadata") or {}).get("resourceVersion", ""))
                    self.routed[key] = routed
                self._refresh([key])
            else:  # a Deployment or Pod: the Canaries of its namespace
                self._refresh([k for k in self.store.canaries if k[0] == key[0]])

    def _refresh(self, keys: list[Key]) -> None:
        for key in keys:
            obj = self.store.canaries.get(key)
            if obj is None:
                continue
            card = json.dumps(summary(obj, self.store, self.routed.get(key)), sort_keys=True)
            if card != self.cards.get(key):
                self.cards[key] = card
                self._emit("canary", key, "")
            page = json.dumps(detail(obj, self.store, self.routed.get(key)), sort_keys=True)
            if page != self.pages.get(key):
                self.pages[key] = page
                self._emit("detail", key, "")

    def _emit(self, kind: str, key: Key | str, data: str) -> None:
        self.seq += 1
        self.events.append(Event(self.seq, kind, key if isinstance(key, str) else "/".join(key), data))
        self.cond.notify_all()

    def fail(self, message: str) -> None:
        with self.cond:
            self.error = message
            self._emit("problem", "", json.dumps({"message": message}))

    def feed(self, changes: Iterator[Change | None], on_error: Callable[[str], None]) -> None:
        try:
            for change in changes:
                if self.stopped.is_set():
                    return
                if change is not None:
                    self.apply(change)
        except CliError as e:
            on_error(str(e))
        except Exception as e:  # the page says so; the server keeps serving what it has
            log.debug("dashboard watch failed", exc_info=True)
            on_error(f"the watch stopped: {type(e).__name__}: {e}")

    def start(self) -> None:
        """The watches, each in a thread of its own."""
        canaries = self.api.watch(self.namespace, None, False, IDLE)
        threading.Thread(target=self.feed, args=(canaries, self.fail), daemon=True,
                         name="canary-dashboard-feed").start()
        if hasattr(self.api, "_client"):  # the real client: the Deployments and Pods too
            related = RelatedWatcher(self.api, self.namespace).run(IDLE)

            def related_failed(message: str) -> None:
                with self.cond:
                    self.related_error = f"images and pods are not shown: {message}"
                    self._emit("problem", "", json.dumps({"message": self.related_error}))

            threading.Thread(target=self.feed, args=(related, related_failed), daemon=True,
                             name="canary-dashboard-feed-related").start()

    # ---- reading ---------------------------------------------------------------------------

    def snapshot(self, key: str | None) -> tuple[int, str]:
        """(seq, JSON) of the list page (key None) or of one Canary's page (null: not known)."""
        with self.cond:
            errors = [e for e in (self.error, self.related_error) if e]
            if key is None:
                cards = [json.loads(self.cards[k]) for k in sorted(self.cards)]
                body = {"canaries": cards, "errors": errors, "namespace": self.namespace}
            else:
                ns, _, name = key.partition("/")
                page = self.pages.get((ns, name))
                body = {"canary": json.loads(page) if page else None, "errors": errors}
            return self.seq, json.dumps(body)

    def current(self, kind: str, key: str) -> str | None:
        """The JSON of a card ("canary") or a page ("detail") now; None once it is gone."""
        ns, _, name = key.partition("/")
        with self.cond:
            return (self.cards if kind == "canary" else self.pages).get((ns, name))

    def wait(self, after: int, timeout: float) -> list[Event] | None:
        """The events after `after` (waiting up to `timeout` for one); None if some of them are
        no longer kept (the stream must start again from a snapshot)."""
        with self.cond:
            if self.seq <= after:
                self.cond.wait(timeout)
            if self.seq <= after:
                return []
            if not self.events or self.events[0].seq > after + 1:
                return None
            return [e for e in self.events if e.seq > after]

    def stop(self) -> None:
        self.stopped.set()
        with self.cond:
            self.cond.notify_all()
