"""Many Canaries on the testbed: create them in parallel, and watch their status changes.

`Timeline` keeps, per Canary, when each status change was first seen (by a watch, not by
listing every Canary several times a second, which at 1,000 would load the API server more than
the operator does)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from testbed import ops

TEMPLATE = "constant"


def deployment(name: str, image: str = "podinfo:1") -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 9898}]}]},
            },
        },
    }


def metric_template(namespace: str) -> dict:
    """A constant check: the analysis costs one cheap query per step, whatever the traffic."""
    return {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": TEMPLATE, "namespace": namespace},
            "spec": {"provider": {"type": "prometheus"}, "query": "vector(100)"}}


def canary(name: str, namespace: str, interval_s: int, step: int, max_weight: int) -> dict:
    return {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {
                "interval": f"{interval_s}s", "threshold": 5, "stepWeight": step, "maxWeight": max_weight,
                "metrics": [{"name": "constant", "templateRef": {"name": TEMPLATE, "namespace": namespace},
                             "thresholdRange": {"min": 90}, "interval": "1m"}],
            },
        },
    }


def parallel(fn, items: list, workers: int = 8) -> None:
    local = threading.local()

    def run(item):
        if not hasattr(local, "client"):
            local.client = ops.api_client()
        for attempt in range(5):
            try:
                return fn(local.client, item)
            except kubernetes.client.ApiException as e:
                if e.status == 409 or attempt == 4:
                    if e.status == 409:
                        return None
                    raise
                time.sleep(0.5 * (attempt + 1))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, items))


def create_fleet(namespace: str, names: list[str], interval_s: int, step: int, max_weight: int) -> None:
    client = ops.api_client()
    kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
        "canary.dev", "v1beta1", namespace, "metrictemplates", metric_template(namespace))

    def create(c, name):
        kubernetes.client.AppsV1Api(c).create_namespaced_deployment(namespace, deployment(name))
        kubernetes.client.CustomObjectsApi(c).create_namespaced_custom_object(
            "canary.dev", "v1beta1", namespace, "canaries", canary(name, namespace, interval_s, step, max_weight))

    parallel(create, names)


def release(namespace: str, names: list[str], image: str, started: dict[str, float]) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}

    def patch(c, name):
        started[name] = time.time()
        kubernetes.client.AppsV1Api(c).patch_namespaced_deployment(name, namespace, body)

    parallel(patch, names)


@dataclass
class Seen:
    at: float
    phase: str
    weight: int
    status: dict[str, Any]


@dataclass
class Timeline:
    """Status changes of every Canary of a namespace, as a watch delivers them."""

    namespace: str
    changes: dict[str, list[Seen]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Timeline":
        threading.Thread(target=self._run, name="bench-watch", daemon=True).start()
        return self

    def _record(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        with self.lock:
            lst = self.changes.setdefault(name, [])
            if lst and _same(lst[-1].status, status):
                return
            lst.append(Seen(time.time(), status.get("phase") or "", int(status.get("canaryWeight") or 0), status))

    def _run(self) -> None:
        client = ops.api_client()
        api = kubernetes.client.CustomObjectsApi(client)
        while not self.stop.is_set():
            try:
                listed = api.list_namespaced_custom_object("canary.dev", "v1beta1", self.namespace, "canaries")
                for obj in listed["items"]:
                    self._record(obj)
                rv = listed["metadata"]["resourceVersion"]
                w = kubernetes.watch.Watch()
                for ev in w.stream(api.list_namespaced_custom_object, "canary.dev", "v1beta1", self.namespace,
                                   "canaries", resource_version=rv, timeout_seconds=60):
                    if self.stop.is_set():
                        w.stop()
                        break
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._record(ev["object"])
            except Exception:  # noqa: BLE001 - a dropped watch: list again
                time.sleep(0.5)

    def latest(self, name: str) -> Seen | None:
        with self.lock:
            lst = self.changes.get(name) or []
            return lst[-1] if lst else None

    def phases(self) -> dict[str, str]:
        with self.lock:
            return {k: v[-1].phase for k, v in self.changes.items() if v}

    def failures(self, t: float) -> dict:
        """Every entry into Failed since `t`: how many per failed check, with one message each
        (the soak says why its releases failed, not only how many)."""
        by_check: dict[str, dict] = {}
        with self.lock:
            for lst in self.changes.values():
                for before, seen in zip([None, *lst], lst):
                    if seen.at < t or seen.phase != "Failed" or (before is not None and before.phase == "Failed"):
                        continue
                    last = seen.status.get("lastFailure") or {}
                    entry = by_check.setdefault(str(last.get("check") or "?"), {"count": 0, "example": ""})
                    entry["count"] += 1
                    entry["example"] = entry["example"] or str(last.get("message") or "")[:300]
        return by_check

    def since(self, name: str, t: float) -> list[Seen]:
        with self.lock:
            return [s for s in self.changes.get(name) or [] if s.at >= t]


def _same(a: dict, b: dict) -> bool:
    return a == b
