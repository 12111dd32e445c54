"""Traffic simulator: synthetic mesh traffic and Istio's standard metrics.

    python -m testbed.trafficsim --kubeconfig PATH [--port 19101] [--rps 50]

Watches VirtualServices (networking.istio.io, whichever version is served),
HTTPRoutes (gateway.networking.k8s.io v1 or v1beta1), Services and Deployments
in all namespaces. Every route object receives ``--rps`` synthetic requests
per second (override per route with the annotation ``sim.canary.dev/rps``) in
100 ms batches; ``testbed.routing`` decides where each goes. The workload's
pod-template annotations decide the outcome:

    sim.canary.dev/error-rate   fraction of 500s (0..1)
    sim.canary.dev/latency-ms   mean latency (default 10)
    sim.canary.dev/latency-jitter  latency uniform in mean x (1 +- jitter) (0..1, default 0.2)

Served on ``--port``:
    /metrics  istio_requests_total, istio_request_duration_milliseconds,
              sim_route_requests_total, sim_route_mirrored_requests_total
    /routes   JSON: the resolved split of every route (``?namespace=NS``)
    /healthz
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from testbed import routing
from testbed.podsim import Informer, Kube, install_signal_handlers, setup_logging

log = logging.getLogger("trafficsim")

ANN_RPS = "sim.canary.dev/rps"
SAMPLES = 32  # latencies drawn per route, leaf and batch at most
ANN_HEADER_SHARE = "sim.canary.dev/header-share"
SOURCE_WORKLOAD = "sim-client"

# Istio's default buckets for istio_request_duration_milliseconds
DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                    600000, 1800000, 3600000)

REQUEST_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
)
ROUTE_LABELS = ("namespace", "route", "kind", "destination_workload")


# --------------------------------------------------------------------------
# Metrics (aggregated per batch, exposed through a custom collector)
# --------------------------------------------------------------------------


class Metrics:
    """Counters and histograms kept as plain dicts; one lock, cheap updates.

    Series untouched for ``prune_after_s`` are dropped so deleted test
    namespaces don't accumulate forever.
    """

    def __init__(self, prune_after_s: float = 900.0):
        self.lock = threading.Lock()
        self.prune_after_s = prune_after_s
        self.requests: dict[tuple, list] = {}  # labels -> [count, touched]
        self.durations: dict[tuple, list] = {}  # labels -> [bucket counts, sum, count, touched]
        self.routes: dict[tuple, list] = {}
        self.mirrored: dict[tuple, list] = {}
        self._last_prune = time.monotonic()
        self._label_strings: dict[tuple, str] = {}  # a series' labels, formatted once

    def observe(self, labels: tuple, latencies: list[float], now: float, weight: int = 1) -> None:
        """``labels`` as REQUEST_LABELS; each latency stands for ``weight`` requests."""
        if not latencies or weight < 1:
            return
        n = len(latencies) * weight
        with self.lock:
            r = self.requests.get(labels)
            if r is None:
                self.requests[labels] = [n, now]
            else:
                r[0] += n
                r[1] = now
            d = self.durations.get(labels)
            if d is None:
                d = self.durations[labels] = [[0] * len(DURATION_BUCKETS), 0.0, 0, now]
            buckets = d[0]
            top = len(DURATION_BUCKETS)
            for lat in latencies:
                i = bisect.bisect_left(DURATION_BUCKETS, lat)  # first bucket with le >= lat
                if i < top:
                    buckets[i] += weight
            d[1] += sum(latencies) * weight
            d[2] += n
            d[3] = now

    def count_route(self, labels: tuple, n: int, now: float, mirrored: bool = False) -> None:
        if n <= 0:
            return
        table = self.mirrored if mirrored else self.routes
        with self.lock:
            r = table.get(labels)
            if r is None:
                table[labels] = [n, now]
            else:
                r[0] += n
                r[1] = now

    def prune(self, now: float) -> None:
        with self.lock:
            cutoff = now - self.prune_after_s
            self._label_strings.clear()
            for table, idx in ((self.requests, 1), (self.durations, 3), (self.routes, 1), (self.mirrored, 1)):
                for k in [k for k, v in table.items() if v[idx] < cutoff]:
                    del table[k]

    def _snapshot(self) -> tuple[list, list, list, list]:
        """Pruned (once a minute), then copied under the lock: requests, durations, routes, mirrored."""
        now = time.monotonic()
        if now - self._last_prune > 60:
            self._last_prune = now
            self.prune(now)
        with self.lock:
            return ([(k, v[0]) for k, v in self.requests.items()],
                    [(k, list(v[0]), v[1], v[2]) for k, v in self.durations.items()],
                    [(k, v[0]) for k, v in self.routes.items()],
                    [(k, v[0]) for k, v in self.mirrored.items()])

    def render(self) -> bytes:
        """The text exposition of :meth:`collect`, written directly: Prometheus scrapes this every
        second, and prometheus_client's generic writer took 0.3 s per scrape at 100 routes (a
        third of a core in a long test run). Label strings are built once per series."""
        reqs, durs, routes, mirrored = self._snapshot()
        cache = self._label_strings

        def labels(names: tuple, key: tuple) -> str:
            found = cache.get((names, key))
            if found is None:
                found = cache[(names, key)] = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, key))
            return found

        out: list[str] = []
        add = out.append

        def counter(name: str, help_: str, names: tuple, rows: list) -> None:
            add(f"# HELP {name} {help_}\n# TYPE {name} counter\n")
            for k, n in rows:
                add(f"{name}{{{labels(names, k)}}} {float(n)!r}\n")

        def histogram(name: str, help_: str, les: tuple, rows: Iterable) -> None:
            add(f"# HELP {name} {help_}\n# TYPE {name} histogram\n")
            for base, counts, total, n in rows:
                acc = 0
                for le, cnt in zip(les, counts):
                    acc += cnt
                    add(f'{name}_bucket{{{base},le="{le}"}} {float(acc)!r}\n')
                add(f'{name}_bucket{{{base},le="+Inf"}} {float(n)!r}\n')
                add(f"{name}_count{{{base}}} {float(n)!r}\n{name}_sum{{{base}}} {float(total)!r}\n")

        counter("istio_requests_total", "Total requests (simulated).", REQUEST_LABELS, reqs)
        histogram("istio_request_duration_milliseconds", "Request duration in ms (simulated).", _LE_MS,
                  ((labels(REQUEST_LABELS, k), c, t, n) for k, c, t, n in durs))
        histogram("http_request_duration_seconds", "Request duration in seconds (simulated app).", _LE_S,
                  ((labels(APP_LABELS, k), c, t, n) for k, (c, t, n) in _app_aggregate(durs).items()))
        counter("sim_route_requests_total", "Simulated requests sent per route object.", ROUTE_LABELS, routes)
        counter("sim_route_mirrored_requests_total", "Simulated mirrored requests per route object.", ROUTE_LABELS,
                mirrored)
        return "".join(out).encode()

    def collect(self) -> Iterable:
        reqs, durs, routes, mirrored = self._snapshot()
        c = CounterMetricFamily("istio_requests_total", "Total requests (simulated).", labels=REQUEST_LABELS)
        for k, n in reqs:
            c.add_metric(k, n)
        yield c
        h = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "Request duration in ms (simulated).", labels=REQUEST_LABELS
        )
        for k, counts, total, n in durs:
            cumulative, acc = [], 0
            for le, cnt in zip(DURATION_BUCKETS, counts):
                acc += cnt
                cumulative.append((_fmt_le(le), acc))
            cumulative.append(("+Inf", n))
            h.add_metric(k, cumulative, total)
        yield h
        yield _app_histogram(durs)
        r = CounterMetricFamily("sim_route_requests_total", "Simulated requests sent per route object.",
                                labels=ROUTE_LABELS)
        for k, n in routes:
            r.add_metric(k, n)
        yield r
        m = CounterMetricFamily("sim_route_mirrored_requests_total",
                                "Simulated mirrored requests per route object.", labels=ROUTE_LABELS)
        for k, n in mirrored:
            m.add_metric(k, n)
        yield m


def _fmt_le(le: float) -> str:
    return str(float(le))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_LE_MS = tuple(_fmt_le(le) for le in DURATION_BUCKETS)
_LE_S = tuple(_fmt_le(le / 1000.0) for le in DURATION_BUCKETS)


def sim_pod_name(workload: str) -> str:
    """A stable pod name `<deployment>-<hash>-<id>`, shaped like a ReplicaSet's pods, so that
    Flagger's app-level PromQL (`kubernetes_pod_name=~"<target>-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"`)
    matches the target's pods and not `<target>-primary`'s."""
    digest = hashlib.sha256(workload.encode()).hexdigest()
    return f"{workload}-{digest[:9]}-{digest[9:14]}"


def _app_histogram(durs: list) -> HistogramMetricFamily:
    """The application's own request histogram, as an instrumented app (podinfo) exports it and
    Prometheus relabels it: `http_request_duration_seconds{kubernetes_namespace,kubernetes_pod_name,
    status}`. Built from what the destination workloads served."""
    agg = _app_aggregate(durs)
    h = HistogramMetricFamily("http_request_duration_seconds", "Request duration in seconds (simulated app).",
                              labels=APP_LABELS)
    for key, (counts, total, n) in agg.items():
        cumulative, acc = [], 0
        for le, cnt in zip(DURATION_BUCKETS, counts):
            acc += cnt
            cumulative.append((_fmt_le(le / 1000.0), acc))
        cumulative.append(("+Inf", n))
        h.add_metric(key, cumulative, total)
    return h


APP_LABELS = ("kubernetes_namespace", "kubernetes_pod_name", "status")


def _app_aggregate(durs: list) -> dict[tuple, list]:
    agg: dict[tuple, list] = {}
    for k, counts, total, n in durs:
        reporter, workload, namespace, code = k[0], k[3], k[4], k[9]
        if reporter != "destination" or workload == "unknown":
            continue
        key = (namespace, sim_pod_name(workload), code)
        a = agg.setdefault(key, [[0] * len(counts), 0.0, 0])
        a[0] = [x + y for x, y in zip(a[0], counts)]
        a[1] += total / 1000.0
        a[2] += n
    return agg


# --------------------------------------------------------------------------
# Object caches
# --------------------------------------------------------------------------


class Store:
    """In-memory caches of the watched kinds; ``generation`` bumps on change."""

    KINDS = ("services", "deployments", "virtualservices", "httproutes")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in self.KINDS}
        self.generation = 0

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "default", meta.get("name") or "")

    def replacer(self, kind: str):
        def on_replace(items: list[dict]) -> None:
            with self.lock:
                new = {self.key(o): o for o in items}
                if new or self.objects[kind]:
                    self.generation += 1
                self.objects[kind] = new

        return on_replace

    def handler(self, kind: str):
        def on_event(etype: str, obj: dict) -> None:
            with self.lock:
                if etype == "DELETED":
                    self.objects[kind].pop(self.key(obj), None)
                else:
                    self.objects[kind][self.key(obj)] = obj
                self.generation += 1

        return on_event

    def snapshot(self) -> tuple[int, dict[str, list[dict]]]:
        with self.lock:
            return self.generation, {k: list(v.values()) for k, v in self.objects.items()}


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


@dataclass
class RouteState:
    kind: str
    namespace: str
    name: str
    rps: float
    resolution: routing.Resolution
    split: routing.Apportioner = field(default_factory=routing.Apportioner)
    mirror: routing.Apportioner = field(default_factory=routing.Apportioner)
    sent: int = 0


def _annotation_float(obj: dict, key: str, default: float, lo: float, hi: float) -> float:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    if raw is None:
        return default
    try:
        return min(max(float(raw), lo), hi)
    except ValueError:
        return default


def _describe(res: routing.Resolution) -> str:
    parts = [f"{wl}={share * 100:.1f}%" for wl, share in sorted(res.workload_shares().items())]
    codes = sorted({leaf.code for leaf, _ in res.leaves.values() if leaf.code is not None})
    if codes:
        parts.append("codes=" + ",".join(map(str, codes)))
    for leaf, share in res.mirrors.values():
        parts.append(f"mirror:{leaf.workload_name}={share * 100:.1f}%")
    return " ".join(parts) or "no traffic"


class TrafficSim:
    def __init__(self, store: Store, metrics: Metrics, rps: float = 50.0, header_share: float = 0.1,
                 batch_s: float = 0.1, seed: int | None = 1):
        self.store = store
        self.metrics = metrics
        self.rps = rps
        self.header_share = header_share
        self.batch_s = batch_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.routes: dict[tuple[str, str, str], RouteState] = {}
        self.resolved_generation = -1
        self._next_resolve = 0.0

    # ---- resolution -----------------------------------------------------

    def reresolve(self) -> None:
        generation, objs = self.store.snapshot()
        world = routing.World.from_objects(objs["services"], objs["deployments"])
        new: dict[tuple[str, str, str], RouteState] = {}
        for kind, items in ((routing.KIND_VS, objs["virtualservices"]), (routing.KIND_HTTPROUTE, objs["httproutes"])):
            for obj in items:
                ns, name = Store.key(obj)
                key = (kind, ns, name)
                rps = _annotation_float(obj, ANN_RPS, self.rps, 0.0, 100000.0)
                share = _annotation_float(obj, ANN_HEADER_SHARE, self.header_share, 0.0, 1.0)
                try:
                    res = routing.resolve(kind, ns, name, obj.get("spec") or {}, world, share)
                except Exception:
                    log.exception("cannot resolve %s %s/%s", kind, ns, name)
                    continue
                old = self.routes.get(key)
                if old is None:
                    state = RouteState(kind, ns, name, rps, res)
                    log.info("%s %s/%s added: %s", kind, ns, name, _describe(res))
                else:
                    if old.resolution.signature() != res.signature():
                        log.info("%s %s/%s now: %s", kind, ns, name, _describe(res))
                    state = old
                    state.resolution = res
                    state.rps = rps
                new[key] = state
        for key in self.routes.keys() - new.keys():
            log.info("%s %s/%s removed", *key)
        with self.lock:
            self.routes = new
        self.resolved_generation = generation

    # ---- traffic --------------------------------------------------------

    def tick(self, dt: float) -> None:
        now = time.monotonic()
        if self.store.generation != self.resolved_generation and now >= self._next_resolve:
            self.reresolve()
            # a large world (1,000 routes) is resolved at most every 5x its own cost: the
            # simulator follows every change within a second without taking a core
            took = time.monotonic() - now
            if took > 0.05:  # a small world is resolved again on the very next tick
                self._next_resolve = now + min(5 * took, 1.0)
        now = time.monotonic()
        with self.lock:
            states = list(self.routes.values())
        for st in states:
            total = st.rps * dt
            res = st.resolution
            counts = st.split.split(total, {k: s for k, (_, s) in res.leaves.items()})
            for key, n in counts.items():
                if n:
                    leaf = res.leaves[key][0]
                    st.sent += n
                    self.metrics.count_route((st.namespace, st.name, st.kind, leaf.workload_name), n, now)
                    self._record(st, leaf, n, now, mirrored=False)
            if res.mirrors:
                mcounts = st.mirror.split(total, {k: s for k, (_, s) in res.mirrors.items()})
                for key, n in mcounts.items():
                    if n:
                        leaf = res.mirrors[key][0]
                        self.metrics.count_route((st.namespace, st.name, st.kind, leaf.workload_name), n, now,
                                                 mirrored=True)
                        self._record(st, leaf, n, now, mirrored=True)

    def _record(self, st: RouteState, leaf: routing.Leaf, n: int, now: float, mirrored: bool) -> None:
        svc = leaf.service
        if svc is None:
            return  # never left the router: no destination to report
        rng = self.rng
        # at most SAMPLES latencies are drawn per batch, each standing for n // SAMPLES requests
        # (the remainder drawn one by one): exact counts, the cost bounded per route, not per request
        if n > SAMPLES:
            weight, rest = divmod(n, SAMPLES)
            self._record_sampled(st, leaf, SAMPLES, weight, now, mirrored)
            if rest:
                self._record_sampled(st, leaf, rest, 1, now, mirrored)
            return
        self._record_sampled(st, leaf, n, 1, now, mirrored)

    def _record_sampled(self, st: RouteState, leaf: routing.Leaf, n: int, weight: int, now: float,
                        mirrored: bool) -> None:
        svc = leaf.service
        assert svc is not None
        rng = self.rng
        by_code: dict[str, list[float]] = {}
        if leaf.workload is None:
            by_code[str(leaf.code or routing.CODE_NO_ENDPOINTS)] = [rng.uniform(0.5, 1.5) for _ in range(n)]
            wl_name, wl_ns, flags = "unknown", svc.namespace, "UH" if leaf.code == 503 else "NR"
        else:
            wl = leaf.workload
            mean = wl.latency_ms
            jitter = wl.latency_jitter
            lat = [mean * rng.uniform(1.0 - jitter, 1.0 + jitter) for _ in range(n)]
            p = wl.error_rate
            if p <= 0:
                by_code["200"] = lat
            elif p >= 1:
                by_code["500"] = lat
            else:
                for x in lat:
                    by_code.setdefault("500" if rng.random() < p else "200", []).append(x)
            wl_name, wl_ns, flags = wl.name, wl.namespace, "-"
        reporters = ("destination",) if mirrored else ("source", "destination")
        for code, lats in by_code.items():
            for reporter in reporters:
                labels = (
                    reporter,
                    SOURCE_WORKLOAD,
                    st.namespace,
                    wl_name,
                    wl_ns,
                    svc.fqdn,
                    svc.name,
                    svc.namespace,
                    "http",
                    code,
                    flags,
                )
                self.metrics.observe(labels, lats, now, weight)

    def run(self, stop: threading.Event) -> None:
        last = time.monotonic()
        next_t = last
        while not stop.is_set():
            next_t += self.batch_s
            delay = next_t - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            now = time.monotonic()
            if now - next_t > 1.0:  # fell far behind (suspended?): don't burst
                next_t = now
            dt = min(now - last, 1.0)
            last = now
            try:
                self.tick(dt)
            except Exception:
                log.exception("tick failed")

    def routes_json(self, namespace: str | None = None) -> dict[str, Any]:
        with self.lock:
            states = list(self.routes.values())
        out = []
        for st in sorted(states, key=lambda s: (s.namespace, s.kind, s.name)):
            if namespace and st.namespace != namespace:
                continue
            j = st.resolution.to_json()
            j["rps"] = st.rps
            j["sent"] = st.sent
            out.append(j)
        return {"routes": out}


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


def make_server(host: str, port: int, sim: TrafficSim, registry: CollectorRegistry) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path == "/metrics":
                self._send(200, sim.metrics.render(), CONTENT_TYPE_LATEST)
            elif url.path == "/routes":
                ns = (parse_qs(url.query).get("namespace") or [None])[0]
                body = json.dumps(sim.routes_json(ns), indent=1).encode()
                self._send(200, body, "application/json")
            elif url.path in ("/healthz", "/readyz", "/"):
                self._send(200, b"ok\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def crd_path(kube: Kube, group: str, plural: str, acceptable: tuple[str, ...] | None):
    state: dict[str, str | None] = {"version": None}

    def path() -> str | None:
        version = kube.preferred_version(group, acceptable)
        if version != state["version"]:
            if version:
                log.info("%s: using %s/%s", plural, group, version)
            state["version"] = version
        return f"/apis/{group}/{version}/{plural}" if version else None

    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.trafficsim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--context")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=19101)
    ap.add_argument("--rps", type=float, default=50.0, help="requests per second per route object")
    ap.add_argument("--header-share", type=float, default=0.1,
                    help="share of requests carrying the headers of the first match rule")
    ap.add_argument("--batch-ms", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging("trafficsim", args.verbose)
    stop = threading.Event()
    install_signal_handlers(stop)

    kube = Kube(args.kubeconfig, args.context)
    store = Store()
    metrics = Metrics()
    registry = CollectorRegistry()
    registry.register(metrics)
    sim = TrafficSim(store, metrics, rps=args.rps, header_share=args.header_share,
                     batch_s=args.batch_ms / 1000.0, seed=args.seed)
    server = make_server(args.host, args.port, sim, registry)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("serving /metrics and /routes on http://%s:%d; API %s; %.0f rps per route",
             args.host, args.port, kube.base, args.rps)

    informers = [
        Informer(kube, "services", "/api/v1/services", store.replacer("services"),
                 store.handler("services"), stop),
        Informer(kube, "deployments", "/apis/apps/v1/deployments", store.replacer("deployments"),
                 store.handler("deployments"), stop),
        Informer(kube, "virtualservices", crd_path(kube, "networking.istio.io", "virtualservices", None),
                 store.replacer("virtualservices"), store.handler("virtualservices"), stop),
        Informer(kube, "httproutes", crd_path(kube, "gateway.networking.k8s.io", "httproutes", ("v1", "v1beta1")),
                 store.replacer("httproutes"), store.handler("httproutes"), stop),
    ]
    for inf in informers:
        inf.start()
    gen = threading.Thread(target=sim.run, args=(stop,), name="generator", daemon=True)
    gen.start()
    stop.wait()
    server.shutdown()
    server.server_close()
    gen.join(timeout=2)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
