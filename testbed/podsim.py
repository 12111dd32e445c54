"""Pod simulator: stands in for the kubelet on the testbed.

    python -m testbed.podsim --kubeconfig PATH [--node sim-node]

* keeps a Node ``sim-node`` registered and Ready (status heartbeat + Lease);
* binds every unscheduled pod to it (there is no scheduler either);
* reports bound pods Running with a pod IP and all containers started/ready,
  unless the pod says otherwise:
    ``sim.canary.dev/ready: "false"``      Running but never Ready
    ``sim.canary.dev/ready-delay-ms: N``    Ready N ms after start
    ``sim.canary.dev/fail: REASON``        the first container fails as a kubelet reports it:
        ``ImagePullBackOff`` / ``ErrImagePull`` (the image cannot be pulled: pod Pending,
        container waiting with the kubelet's message) or ``CrashLoopBackOff`` (pod Running,
        container waiting after 3 restarts, last exit code 1); never Ready
* force-deletes terminating pods, since no kubelet will confirm them (also
  those left on nodes that no longer exist: the testbed runs no pod GC).

Also home of the small raw-JSON Kubernetes client (``Kube``) and list+watch
loop (``Informer``) that the traffic simulator uses as well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import heapq
import ipaddress
import json
import logging
import random
import signal
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import httpx

log = logging.getLogger("podsim")

ANN_READY = "sim.canary.dev/ready"
ANN_READY_DELAY = "sim.canary.dev/ready-delay-ms"
ANN_FAIL = "sim.canary.dev/fail"
PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull")
FAILURES = PULL_FAILURES + ("CrashLoopBackOff",)
NODE_NAME = "sim-node"
HOST_IP = "10.0.0.10"
POD_NET = ipaddress.ip_network("10.244.0.0/16")
HEARTBEAT_S = 10.0
CONDITION_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


# --------------------------------------------------------------------------
# Small Kubernetes client (dicts in, dicts out)
# --------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str = "", path: str = ""):
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")


class Gone(Exception):
    """The watch's resourceVersion is too old: re-list."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Kube:
    """Minimal synchronous API client over httpx, configured from a kubeconfig."""

    def __init__(self, kubeconfig: str, context: str | None = None):
        from kubernetes import client as kclient
        from kubernetes import config as kconfig

        cfg = kclient.Configuration()
        kconfig.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        self.base = cfg.host.rstrip("/")
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {"Accept": "application/json", "User-Agent": "canary-testbed-sim"}
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if auth:
            prefix = (cfg.api_key_prefix or {}).get("authorization")
            headers["Authorization"] = f"{prefix} {auth}" if prefix and not auth.startswith(prefix) else auth
        self._ssl = ctx
        self._headers = headers
        self.http = self._client(timeout=httpx.Timeout(15.0))

    def _client(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            verify=self._ssl,
            headers=self._headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                content_type: str = "application/json") -> dict:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self.http.request(method, path, content=data, params=params, headers=headers)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text, method, path)
        return resp.json() if resp.content else {}

    def get(self, path: str, params: dict | None = None) -> dict:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> dict:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> dict:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> dict:
        ct = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body, content_type=ct)

    def delete(self, path: str, body: Any = None) -> dict:
        return self.request("DELETE", path, body)

    def list(self, path: str) -> tuple[list[dict], str]:
        """All items (paged) and the list's resourceVersion."""
        items: list[dict] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            out = self.get(path, params)
            items.extend(out.get("items") or [])
            meta = out.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            params["continue"] = meta["continue"]

    def watch(self, path: str, resource_version: str, timeout_s: int) -> Iterator[dict]:
        """Watch events (dicts with type/object) until the server closes the stream."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        timeout = httpx.Timeout(10.0, read=timeout_s + 30.0)
        with self.http.stream("GET", path, params=params, timeout=timeout) as resp:
            if resp.status_code == 410:
                raise Gone()
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(resp.status_code, resp.text, "WATCH", path)
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def preferred_version(self, group: str, acceptable: tuple[str, ...] | None = None) -> str | None:
        """Version of ``group`` to use (the preferred one if acceptable), or None if absent."""
        try:
            info = self.get(f"/apis/{group}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        served = [v.get("version") for v in info.get("versions") or []]
        pref = (info.get("preferredVersion") or {}).get("version")
        if acceptable is None:
            return pref or (served[0] if served else None)
        if pref in acceptable:
            return pref
        for v in acceptable:
            if v in served:
                return v
        return None


class Informer(threading.Thread):
    """List + watch one resource collection forever, feeding callbacks.

    ``path`` is a string or a callable returning the collection path (or None
    while the resource does not exist, e.g. a CRD not yet installed).
    ``on_replace(items)`` gets the full list after every (re)list,
    ``on_event(type, obj)`` every ADDED/MODIFIED/DELETED event. Watch
    timeouts re-watch from the last resourceVersion; 410 Gone and errors
    re-list, with exponential backoff on errors.
    """

    def __init__(
        self,
        kube: Kube,
        name: str,
        path: str | Callable[[], str | None],
        on_replace: Callable[[list[dict]], None],
        on_event: Callable[[str, dict], None],
        stop: threading.Event,
        watch_timeout_s: int = 240,
        logger: logging.Logger | None = None,
    ):
        super().__init__(name=f"informer-{name}", daemon=True)
        self.kube = kube
        self.resource = name
        self._path = path
        self.on_replace = on_replace
        self.on_event = on_event
        self.stop = stop
        self.watch_timeout_s = watch_timeout_s
        self.log = logger or log
        self.synced = threading.Event()

    def path(self) -> str | None:
        return self._path() if callable(self._path) else self._path

    def run(self) -> None:
        backoff = 0.5
        absent_logged = False
        while not self.stop.is_set():
            try:
                path = self.path()
                if path is None:
                    if not absent_logged:
                        self.log.info("%s: API not available yet, waiting", self.resource)
                        absent_logged = True
                    self.on_replace([])
                    self.synced.set()
                    self.stop.wait(2.0)
                    continue
                items, rv = self.kube.list(path)
                self.on_replace(items)
                self.synced.set()
                if absent_logged:
                    self.log.info("%s: listed %d from %s", self.resource, len(items), path)
                absent_logged = False
                backoff = 0.5
                while not self.stop.is_set():
                    rv = self._watch_once(path, rv)
            except Gone:
                self.log.info("%s: watch expired, re-listing", self.resource)
            except Exception as e:  # network errors, API errors, bad JSON
                if self.stop.is_set():
                    return
                if isinstance(e, ApiError) and e.status == 404:
                    absent_logged = False  # CRD may have gone: rediscover quietly
                self.log.warning("%s: watch error (%s: %s), retrying in %.1fs",
                                 self.resource, type(e).__name__, str(e)[:200], backoff)
                self.stop.wait(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 10.0)

    def _watch_once(self, path: str, rv: str) -> str:
        timeout = int(self.watch_timeout_s * random.uniform(0.8, 1.2))
        for ev in self.kube.watch(path, rv, timeout):
            if self.stop.is_set():
                break
            etype = ev.get("type")
            obj = ev.get("object") or {}
            if etype == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise ApiError(int(obj.get("code") or 500), json.dumps(obj), "WATCH", path)
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = new_rv
            if etype == "BOOKMARK":
                continue
            try:
                self.on_event(etype, obj)
            except Exception:
                self.log.exception("%s: handler failed for %s event", self.resource, etype)
        return rv


def setup_logging(name: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except Exception:
        pass


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, _frame):
        log.info("signal %d received, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------
# Pod status computation (pure)
# --------------------------------------------------------------------------


def _rv(meta: dict) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


def pod_key(pod: dict) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return (meta.get("namespace") or "default", meta.get("name") or "")


def ready_delay_s(pod: dict) -> float:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(ANN_READY_DELAY)
    if not raw:
        return 0.0
    try:
        return max(float(raw), 0.0) / 1000.0
    except ValueError:
        return 0.0


def wants_ready(pod: dict) -> bool:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(ANN_READY, "true")).strip().lower() not in ("false", "0", "no")


def failure_of(pod: dict) -> str | None:
    """The failure the pod asks to simulate (sim.canary.dev/fail), or None."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    value = str(ann.get(ANN_FAIL, "")).strip()
    return value if value in FAILURES else None


def _failed_container(c: dict, fail: str, pod: dict, start: str) -> dict:
    """The status a kubelet reports for a container that cannot be pulled or keeps crashing."""
    image = c.get("image") or ""
    meta = pod.get("metadata") or {}
    out = {"name": c.get("name"), "image": image, "imageID": "", "ready": False, "started": False,
           "restartCount": 0, "lastState": {}}
    if fail == "ImagePullBackOff":
        out["state"] = {"waiting": {"reason": fail, "message": f'Back-off pulling image "{image}"'}}
    elif fail == "ErrImagePull":
        out["state"] = {"waiting": {"reason": fail, "message": (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": not found')}}
    else:  # CrashLoopBackOff
        out.update(restartCount=3, imageID=f"{image}@sha256:" + hashlib.sha256(image.encode()).hexdigest())
        out["state"] = {"waiting": {"reason": fail, "message": (
            f"back-off 40s restarting failed container={c.get('name')} "
            f"pod={meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})")}}
        out["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": start, "finishedAt": start}}
    return out


def _condition(status: dict, ctype: str) -> dict | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def is_ready(pod: dict) -> bool:
    c = _condition(pod.get("status") or {}, "Ready")
    return bool(c and c.get("status") == "True")


def desired_status(pod: dict, pod_ip: str, host_ip: str, ready: bool, now: str) -> dict:
    """The status a kubelet would report for a started pod."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    start = status.get("startTime") or now
    uid = (pod.get("metadata") or {}).get("uid") or ""

    def cond(ctype: str, value: bool, reason: str | None = None, message: str | None = None) -> dict:
        sval = "True" if value else "False"
        old = _condition(status, ctype)
        ltt = old.get("lastTransitionTime") if old and old.get("status") == sval else None
        c = {"type": ctype, "status": sval, "lastProbeTime": None, "lastTransitionTime": ltt or now}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    def cid(name: str) -> str:
        return "containerd://" + hashlib.sha256(f"{uid}/{name}".encode()).hexdigest()

    def image_id(image: str) -> str:
        return f"{image}@sha256:" + hashlib.sha256(image.encode()).hexdigest()

    containers = spec.get("containers") or []
    names = [c.get("name") for c in containers]
    fail = failure_of(pod)
    ready = ready and fail is None
    statuses = []
    for i, c in enumerate(containers):
        if fail and i == 0:
            statuses.append(_failed_container(c, fail, pod, start))
            continue
        statuses.append(
            {
                "name": c.get("name"),
                "image": c.get("image") or "",
                "imageID": image_id(c.get("image") or ""),
                "containerID": cid(c.get("name") or ""),
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": start}},
                "lastState": {},
            }
        )
    init_statuses = []
    for c in spec.get("initContainers") or []:
        init_statuses.append(
            {
                "name": c.get("name"),
                "image": c.get("image") or "",
                "imageID": image_id(c.get("image") or ""),
                "containerID": cid(c.get("name") or ""),
                "ready": True,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": start, "finishedAt": start}},
                "lastState": {},
            }
        )
    not_ready_msg = f"containers with unready status: [{' '.join(n or '' for n in names)}]"
    out = {
        "phase": "Pending" if fail in PULL_FAILURES else "Running",
        "hostIP": host_ip,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start,
        "conditions": [
            cond("Initialized", True),
            cond("Ready", ready, None if ready else "ContainersNotReady", None if ready else not_ready_msg),
            cond("ContainersReady", ready, None if ready else "ContainersNotReady", None if ready else not_ready_msg),
            cond("PodScheduled", True),
        ],
        "containerStatuses": statuses,
    }
    if init_statuses:
        out["initContainerStatuses"] = init_statuses
    return out


def status_matches(pod: dict, ready: bool) -> bool:
    status = pod.get("status") or {}
    fail = failure_of(pod)
    if status.get("phase") != ("Pending" if fail in PULL_FAILURES else "Running") or not status.get("podIP"):
        return False
    if is_ready(pod) != (ready and fail is None):
        return False
    n = len((pod.get("spec") or {}).get("containers") or [])
    statuses = status.get("containerStatuses") or []
    if len(statuses) != n:
        return False
    waiting = ((statuses[0].get("state") or {}).get("waiting") or {}) if statuses else {}
    return waiting.get("reason") == fail


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


class IPAllocator:
    def __init__(self, network: ipaddress.IPv4Network = POD_NET):
        self.hosts = network.num_addresses
        self.base = int(network.network_address)
        self.next = 2
        self.by_pod: dict[str, str] = {}
        self.used: set[str] = set()
        self.lock = threading.Lock()

    def claim(self, uid: str, ip: str) -> None:
        with self.lock:
            self.by_pod[uid] = ip
            self.used.add(ip)

    def get(self, uid: str) -> str:
        with self.lock:
            if uid in self.by_pod:
                return self.by_pod[uid]
            for _ in range(self.hosts):
                n = self.next
                self.next = self.next + 1 if self.next + 1 < self.hosts - 1 else 2
                if n % 256 in (0, 255):
                    continue
                ip = str(ipaddress.ip_address(self.base + n))
                if ip not in self.used:
                    self.by_pod[uid] = ip
                    self.used.add(ip)
                    return ip
            raise RuntimeError("pod IP range exhausted")

    def release(self, uid: str) -> None:
        with self.lock:
            ip = self.by_pod.pop(uid, None)
            if ip:
                self.used.discard(ip)


class Timers(threading.Thread):
    """One thread running delayed callbacks."""

    def __init__(self, stop: threading.Event):
        super().__init__(name="timers", daemon=True)
        self.stop = stop
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.cv = threading.Condition()
        self.seq = 0

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, fn))
            self.cv.notify()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.cv:
                if not self.heap:
                    self.cv.wait(1.0)
                    continue
                when, _, fn = self.heap[0]
                delay = when - time.time()
                if delay > 0:
                    self.cv.wait(min(delay, 1.0))
                    continue
                heapq.heappop(self.heap)
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")


class PodSim:
    def __init__(self, kube: Kube, stop: threading.Event, node: str = NODE_NAME, host_ip: str = HOST_IP,
                 workers: int = 8, bind: bool = True):
        self.kube = kube
        self.stop = stop
        self.node = node
        self.host_ip = host_ip
        self.bind = bind  # False: only serve pods already bound to our node
        self.started: dict[str, float] = {}  # uid -> when we reported it Running (startTime has 1s precision)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pod")
        self.ips = IPAllocator()
        self.timers = Timers(stop)
        self.lock = threading.Lock()
        self.pods: dict[tuple[str, str], dict] = {}  # latest seen object per pod
        self.inflight: set[tuple[str, str]] = set()
        self.again: set[tuple[str, str]] = set()
        self.deleting: dict[str, float] = {}  # uid -> last force-delete attempt
        self._node_conditions: dict[str, dict] = {}
        self._nodes: dict[str, tuple[bool, float]] = {}

    # ---- node -----------------------------------------------------------

    def node_object(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                    "sim.canary.dev/simulated": "true",
                },
            },
            "spec": {"podCIDR": str(POD_NET), "podCIDRs": [str(POD_NET)]},
        }

    def node_status(self) -> dict:
        now = now_rfc3339()
        old = self._node_conditions

        def cond(ctype: str, value: str, reason: str, message: str) -> dict:
            prev = old.get(ctype)
            ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == value else now
            return {"type": ctype, "status": value, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": ltt}

        resources = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"}
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": self.host_ip}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "sim", "systemUUID": "sim", "bootID": "sim",
                "kernelVersion": "sim", "osImage": "canary-operator pod simulator",
                "containerRuntimeVersion": "sim://1.0", "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def ensure_node(self) -> None:
        path = f"/api/v1/nodes/{self.node}"
        try:
            current = self.kube.get(path)
        except ApiError as e:
            if e.status != 404:
                raise
            current = self.kube.post("/api/v1/nodes", self.node_object())
            log.info("created node %s", self.node)
        self._node_conditions = {c.get("type"): c for c in (current.get("status") or {}).get("conditions") or []}
        self.heartbeat()

    def heartbeat(self) -> None:
        status = self.node_status()
        try:
            out = self.kube.patch(f"/api/v1/nodes/{self.node}/status", {"status": status})
        except ApiError as e:
            if e.status == 404:
                self.ensure_node()
                return
            raise
        self._node_conditions = {c.get("type"): c for c in (out.get("status") or {}).get("conditions") or []}
        self.clear_condition_taints(out)
        self.renew_lease()

    def clear_condition_taints(self, node: dict) -> None:
        """Drop not-ready/unreachable taints (the API server adds not-ready at
        registration; the testbed runs no node lifecycle controller to lift it)."""
        taints = (node.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if t.get("key") not in CONDITION_TAINTS]
        if len(keep) != len(taints):
            self.kube.patch(f"/api/v1/nodes/{self.node}", {"spec": {"taints": keep or None}})
            log.info("removed condition taints from node %s", self.node)

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.kube.patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                log.debug("lease renew failed: %s", e)
                return
            try:
                self.kube.post(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.node, "namespace": "kube-node-lease"}, "spec": spec},
                )
            except ApiError as e2:
                log.debug("lease create failed: %s", e2)

    def heartbeat_loop(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except Exception as e:
                log.warning("node heartbeat failed: %s", e)

    # ---- pods -----------------------------------------------------------

    def on_replace(self, items: list[dict]) -> None:
        seen = set()
        with self.lock:
            for pod in items:
                key = pod_key(pod)
                seen.add(key)
                self.pods[key] = pod
                ip = (pod.get("status") or {}).get("podIP")
                uid = (pod.get("metadata") or {}).get("uid")
                if ip and uid and (pod.get("spec") or {}).get("nodeName") == self.node:
                    self.ips.claim(uid, ip)
            for key in list(self.pods):
                if key not in seen:
                    del self.pods[key]
        for pod in items:
            self.submit(pod)

    def on_event(self, etype: str, pod: dict) -> None:
        key = pod_key(pod)
        if etype == "DELETED":
            with self.lock:
                self.pods.pop(key, None)
            uid = (pod.get("metadata") or {}).get("uid")
            if uid:
                self.ips.release(uid)
                self.deleting.pop(uid, None)
                self.started.pop(uid, None)
            return
        with self.lock:
            self.pods[key] = pod
        self.submit(pod)

    def submit(self, pod: dict) -> None:
        if not self._needs_work(pod):
            return
        key = pod_key(pod)
        with self.lock:
            if key in self.inflight:
                self.again.add(key)
                return
            self.inflight.add(key)
        self.pool.submit(self._work, key)

    def _needs_work(self, pod: dict) -> bool:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            node = spec.get("nodeName")
            # in bind mode also reap pods left on vanished nodes (no podgc on the testbed)
            return node == self.node or (self.bind and (not node or not self._node_exists(node)))
        if not spec.get("nodeName"):
            return self.bind and status.get("phase", "Pending") == "Pending"
        if spec.get("nodeName") != self.node:
            return False
        if status.get("phase") in ("Succeeded", "Failed"):
            return False
        return not status_matches(pod, self._ready_now(pod)[0])

    def _node_exists(self, name: str) -> bool:
        """Cached for 10 s; errors count as existing (never reap by mistake)."""
        hit = self._nodes.get(name)
        if hit and time.monotonic() - hit[1] < 10:
            return hit[0]
        try:
            self.kube.get(f"/api/v1/nodes/{name}")
            exists = True
        except ApiError as e:
            exists = e.status != 404
        except Exception:
            exists = True
        self._nodes[name] = (exists, time.monotonic())
        return exists

    def _ready_now(self, pod: dict) -> tuple[bool, float | None]:
        """(ready now?, time it becomes ready if delayed)."""
        if not wants_ready(pod):
            return False, None
        delay = ready_delay_s(pod)
        if delay <= 0:
            return True, None
        uid = (pod.get("metadata") or {}).get("uid") or ""
        start = self.started.get(uid) or parse_time((pod.get("status") or {}).get("startTime"))
        now = time.time()
        if start is None:
            return False, now + delay
        at = start + delay
        return (now >= at), (None if now >= at else at)

    def _work(self, key: tuple[str, str]) -> None:
        try:
            while True:
                with self.lock:
                    pod = self.pods.get(key)
                    self.again.discard(key)
                if pod is not None and not self.stop.is_set():
                    try:
                        self._reconcile(pod)
                    except ApiError as e:
                        if e.status not in (404, 409):
                            log.warning("%s/%s: %s", key[0], key[1], e)
                    except Exception as e:
                        log.warning("%s/%s: %s: %s", key[0], key[1], type(e).__name__, e)
                with self.lock:
                    if key not in self.again:
                        self.inflight.discard(key)
                        return
        except Exception:
            with self.lock:
                self.inflight.discard(key)
            raise

    def _reconcile(self, pod: dict) -> None:
        ns, name = pod_key(pod)
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        spec = pod.get("spec") or {}
        base = f"/api/v1/namespaces/{ns}/pods/{name}"

        if meta.get("deletionTimestamp"):
            last = self.deleting.get(uid, 0.0)
            if time.time() - last < 2.0:
                return
            self.deleting[uid] = time.time()
            self.kube.delete(base, {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                    "preconditions": {"uid": uid}})
            where = "" if spec.get("nodeName") in (None, "", self.node) else f" (node {spec['nodeName']} is gone)"
            log.info("force-deleted pod %s/%s%s", ns, name, where)
            return

        if not spec.get("nodeName"):
            if not self.bind:
                return
            self.kube.post(
                f"{base}/binding",
                {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns, "uid": uid},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}},
            )
            log.info("bound pod %s/%s to %s", ns, name, self.node)
            pod = dict(pod)
            pod["spec"] = dict(spec, nodeName=self.node)
        elif spec.get("nodeName") != self.node:
            return

        if uid not in self.started and not (pod.get("status") or {}).get("startTime"):
            self.started[uid] = time.time()
        ready, ready_at = self._ready_now(pod)
        if status_matches(pod, ready):
            if ready_at is not None:
                self.timers.call_at(ready_at, lambda k=(ns, name): self._recheck(k))
            return
        now = now_rfc3339()
        ip = (pod.get("status") or {}).get("podIP") or self.ips.get(uid)
        status = desired_status(pod, ip, self.host_ip, ready, now)
        out = self.kube.patch(f"{base}/status", {"status": status})
        with self.lock:
            cached = (self.pods.get((ns, name)) or {}).get("metadata") or {}
            if cached.get("uid") == uid and _rv(cached) <= _rv(out.get("metadata") or {}):
                self.pods[(ns, name)] = out
        if ready_at is not None:
            self.timers.call_at(ready_at, lambda k=(ns, name): self._recheck(k))
        fail = failure_of(pod)
        why = f" ({fail})" if fail else "" if ready else (
            " (ready=false annotation)" if not wants_ready(pod) else " (ready after delay)")
        log.info("pod %s/%s %s ip=%s ready=%s%s", ns, name, status["phase"], ip, ready and not fail, why)

    def _recheck(self, key: tuple[str, str]) -> None:
        with self.lock:
            pod = self.pods.get(key)
        if pod is not None:
            self.submit(pod)

    # ---- main -----------------------------------------------------------

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self.ensure_node()
                break
            except Exception as e:
                log.warning("cannot register node %s yet: %s", self.node, e)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        if self.stop.is_set():
            return
        log.info("node %s ready; watching pods", self.node)
        self.timers.start()
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        informer = Informer(self.kube, "pods", "/api/v1/pods", self.on_replace, self.on_event, self.stop)
        informer.start()
        self.stop.wait()
        self.pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.podsim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--context")
    ap.add_argument("--node", default=NODE_NAME)
    ap.add_argument("--host-ip", default=HOST_IP)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--no-bind", action="store_true",
                    help="don't bind unscheduled pods; only serve pods already bound to --node "
                         "(to run a second instance next to the testbed's)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging("podsim", args.verbose)
    stop = threading.Event()
    install_signal_handlers(stop)
    kube = Kube(args.kubeconfig, args.context)
    log.info("starting against %s", kube.base)
    PodSim(kube, stop, node=args.node, host_ip=args.host_ip, workers=args.workers, bind=not args.no_bind).run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
