"""Watching a Canary (and its Deployments and Pods) the way kubectl does: one list, then a
watch from its resourceVersion, resumed where it stopped; relisted only on `410 Gone`.

Each resource streams in its own thread into one queue; the consumer gets the changes in
order and a None whenever `idle` seconds pass without one (to redraw a countdown, print a
heartbeat or check a timeout) — no request is made for those."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from canary.cli.errors import GROUP, PLURAL, VERSION, CliError, NotFound


class Source(Protocol):
    """What a Watcher needs of canary/cli/api.py's KubeApi (no import of it: no cycle)."""

    _client: Any  # a kubernetes.client.ApiClient
    timeout: float | None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any: ...

    def not_served(self) -> Exception: ...


WATCH_SECONDS = 240  # the server ends a watch after this; it is resumed from its resourceVersion
RETRIES = 5  # consecutive failures of one stream before the command gives up


def watching() -> bool:
    """Whether a watch thread is still running (blocked in a read, after its watch ended)."""
    return any(t.name.startswith("canary-watch-") and t.is_alive() for t in threading.enumerate())


@dataclass(frozen=True)
class Change:
    kind: str  # "canary" | "deployment" | "pod"
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict


class Watcher:
    def __init__(self, api: Source, namespace: str | None, name: str | None, related: bool):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.related = related and namespace is not None

    def _sources(self) -> list[tuple[str, Any, dict[str, Any]]]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api._client)
        kw: dict[str, Any] = {"field_selector": f"metadata.name={self.name}"} if self.name else {}
        sources: list[tuple[str, Any, dict[str, Any]]]
        if self.namespace is None:
            sources = [("canary", custom.list_cluster_custom_object, {"group": GROUP, "version": VERSION,
                                                                      "plural": PLURAL, **kw})]
        else:
            sources = [("canary", custom.list_namespaced_custom_object, {"group": GROUP, "version": VERSION,
                                                                         "namespace": self.namespace,
                                                                         "plural": PLURAL, **kw})]
        if self.related:
            apps, core = client.AppsV1Api(self.api._client), client.CoreV1Api(self.api._client)
            sources.append(("deployment", apps.list_namespaced_deployment, {"namespace": self.namespace}))
            sources.append(("pod", core.list_namespaced_pod, {"namespace": self.namespace}))
        return sources

    def run(self, idle: float) -> Iterator[Change | None]:
        out: queue.Queue[Change | Exception] = queue.Queue()
        stop = threading.Event()
        for kind, fn, kw in self._sources():
            threading.Thread(target=self._stream, args=(kind, fn, kw, out, stop), daemon=True,
                             name=f"canary-watch-{kind}").start()
        try:
            while True:
                try:
                    item = out.get(timeout=idle)
                except queue.Empty:
                    yield None
                    continue
                if isinstance(item, CliError):
                    raise item
                if isinstance(item, Exception):
                    raise CliError(f"watching {self.name or 'canaries'}: {item}")
                yield item
        finally:
            stop.set()

    def _stream(self, kind: str, fn: Callable[..., Any], kw: dict[str, Any], out: queue.Queue[Any],
                stop: threading.Event) -> None:
        from kubernetes import watch

        def listing() -> dict[str, Any]:
            resp = fn(**kw, _preload_content=False, _request_timeout=self.api.timeout)
            import json

            return dict(json.loads(resp.data))

        version: str | None = None
        failures = 0
        while not stop.is_set():
            try:
                if version is None:
                    try:
                        listed = self.api._call(f"listing {kind}s", listing)
                    except NotFound:
                        out.put(self.api.not_served() if kind == "canary" else CliError(f"cannot list {kind}s"))
                        return
                    for item in listed.get("items") or []:
                        out.put(Change(kind, "ADDED", item))
                    version = str((listed.get("metadata") or {}).get("resourceVersion") or "") or None
                w = watch.Watch()
                for event in w.stream(fn, **kw, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                      _request_timeout=WATCH_SECONDS + 30):
                    if stop.is_set():
                        w.stop()
                        return
                    obj = event.get("raw_object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:  # too old: list again
                            version = None
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    out.put(Change(kind, str(event.get("type")), obj))
                failures = 0
            except CliError as e:  # forbidden, unreachable: the first time, say so
                if version is None:
                    out.put(e)
                    return
                failures += 1
            except Exception as e:  # a dropped connection: resume, a few times
                failures += 1
                if failures >= RETRIES:
                    out.put(CliError(f"the watch of {kind}s keeps failing: {e}"))
                    return
            if failures:
                if failures >= RETRIES:
                    out.put(CliError(f"the watch of {kind}s keeps failing"))
                    return
                time.sleep(min(2.0 ** failures, 10.0))
