"""One benchmark run (see bench/__main__.py): the measurements and the table."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import kubernetes

from bench import fleet, procstat, promtext
from testbed import cluster, ops

OPERATOR_USER = cluster.IDENTITIES["operator"][1]
METRICS_PORT = 19160 + cluster._OFFSET
RUN_PHASES = ("Progressing", "Promoting", "Finalising")


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))], 3)


def dist(values: list[float]) -> dict:
    return {"p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": pct(values, 1.0), "n": len(values)}


def _wait(pred, timeout: float, what: str, step: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    raise TimeoutError(f"{what} not reached in {timeout:.0f}s")


def audit_requests(offset: int, lo: float, hi: float, namespace: str) -> dict[str, int]:
    """The operator's requests in `namespace` between lo and hi (audit log, read from `offset`)."""
    counts: dict[str, int] = {}
    with open(cluster.paths().audit_log, "rb") as f:
        f.seek(offset)
        for raw in f:
            if OPERATOR_USER.encode() not in raw or namespace.encode() not in raw:
                continue
            try:
                e = json.loads(raw)
            except ValueError:
                continue
            if e.get("stage") != "ResponseComplete" or (e.get("user") or {}).get("username") != OPERATOR_USER:
                continue
            ref = e.get("objectRef") or {}
            if e.get("verb") == "watch" or ref.get("namespace") != namespace:
                continue
            ts = datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if lo <= ts <= hi:
                what = f"{e['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
                counts[what] = counts.get(what, 0) + 1
    return dict(sorted(counts.items()))


def _audit_size() -> int:
    try:
        return cluster.paths().audit_log.stat().st_size
    except OSError:
        return 0


def settle(scr: "Scraper", quiet: float = 3.0, limit: float = 60.0) -> float:
    """Wait until the operator's request counter is still for `quiet` s (at most `limit` s): the
    Events of the last steps are sent in the background. Returns the seconds waited."""
    start = time.monotonic()
    last, still = scr.requests(scr.text()), time.monotonic()
    while time.monotonic() - still < quiet and time.monotonic() - start < limit:
        time.sleep(0.5)
        now = scr.requests(scr.text())
        if now != last:
            last, still = now, time.monotonic()
    return round(time.monotonic() - start, 1)


class Scraper:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/metrics"

    def text(self) -> str:
        return promtext.scrape(self.url)

    def requests(self, text: str) -> float:
        return sum(promtext.counter(text, "canary_operator_api_requests").values())


def release_measures(timeline: fleet.Timeline, names: list[str], started: dict[str, float],
                     interval_s: int, step: int) -> dict:
    reaction, lag, wall = [], [], []
    for name in names:
        t0 = started[name]
        seen = timeline.since(name, t0)
        if seen:
            reaction.append(seen[0].at - t0)
        times: dict[str, float] = {}
        for s in seen:
            if s.phase == "Progressing" and s.weight > 0:
                times.setdefault(f"w{s.weight}", s.at)
            if s.phase in ("Promoting", "Finalising", "Succeeded"):
                times.setdefault("promote", s.at)
            if s.phase == "Succeeded":
                times.setdefault("done", s.at)
        marks = [times.get(f"w{step}"), times.get(f"w{2 * step}"), times.get("promote")]
        for a, b in zip(marks, marks[1:]):
            if a is not None and b is not None:
                lag.append(b - a - interval_s)
        if "done" in times:
            wall.append(times["done"] - t0)
    return {"reaction_seconds": dist(reaction), "weight_step_lag_seconds": dist(lag),
            "promotion_wall_seconds": dist(wall)}


def timings(before: str, after: str) -> dict:
    phases = promtext.diff(promtext.histograms(after, "canary_operator_tick_phase_duration_seconds"),
                           promtext.histograms(before, "canary_operator_tick_phase_duration_seconds"))
    api = promtext.diff(promtext.histograms(after, "canary_operator_api_request_duration_seconds"),
                        promtext.histograms(before, "canary_operator_api_request_duration_seconds"))
    ticks = promtext.diff(promtext.histograms(after, "canary_operator_reconcile_duration_seconds"),
                          promtext.histograms(before, "canary_operator_reconcile_duration_seconds"))
    return {"tick_phases": promtext.summary(phases, "phase"), "api_requests": promtext.summary(api, "verb,resource"),
            "tick": promtext.summary(ticks, "").get("", {})}


def run(n: int, interval_s: int, step: int, max_weight: int, *, idle_s: int = 30, soak_minutes: float = 0,
        release_every: int = 180, operator_args: list[str] | None = None) -> dict:
    client = ops.api_client()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    ops.ensure_namespace(client, ns)
    names = [f"app{i:04d}" for i in range(n)]
    out: dict = {"time": datetime.now().astimezone().isoformat(timespec="seconds"), "canaries": n,
                 "interval_seconds": interval_s, "step_weight": step, "max_weight": max_weight,
                 "weight_steps": -(-max_weight // step), "floor_seconds": -(-max_weight // step) * interval_s}
    timeline = fleet.Timeline(ns).start()
    # the operator watches the benchmark's namespace only: Canaries of another run (or another
    # engineer's namespace being deleted) must not be counted as its work
    op = ops.OperatorProcess(name="bench-operator", metrics_port=METRICS_PORT, scrape=False, namespace=ns,
                             extra=list(operator_args or []))
    try:
        t = time.monotonic()
        fleet.create_fleet(ns, names, interval_s, step, max_weight)
        out["create_seconds"] = round(time.monotonic() - t, 1)
        # ---- start: all Initialized ------------------------------------------------------
        op.start()
        procs = procstat.Procs({"operator": op.proc.pid})
        scr = Scraper(METRICS_PORT)
        snap, t = procs.snapshot(), time.monotonic()
        init_s = _wait(lambda: sum(p == "Initialized" for p in timeline.phases().values()) >= n,
                       max(300, n * 0.6), "all Initialized")
        out["all_initialized_after_seconds"] = round(init_s, 1)
        out["startup_usage"] = procstat.usage(snap, procs.snapshot(), time.monotonic() - t)
        # ---- idle (once the Events of the initialisation are out) ----------------------------
        out["initialized_drain_seconds"] = settle(scr)
        text0, snap, t = scr.text(), procs.snapshot(), time.monotonic()
        time.sleep(idle_s)
        text1, dt = scr.text(), time.monotonic() - t
        usage = procstat.usage(snap, procs.snapshot(), dt)
        out["idle"] = {"seconds": round(dt, 1), "operator_requests_per_second":
                       round((Scraper.requests(scr, text1) - Scraper.requests(scr, text0)) / dt, 3),
                       "operator_cores": usage["operator"]["cores"], "operator_rss_mb": usage["operator"]["rss_mb"],
                       "usage": usage}
        # ---- every release at once --------------------------------------------------------
        started: dict[str, float] = {}
        text0, snap, offset = scr.text(), procs.snapshot(), _audit_size()
        t, lo = time.monotonic(), time.time()
        fleet.release(ns, names, "podinfo:2", started)
        out["release_trigger_seconds"] = round(time.monotonic() - t, 1)
        floor = out["floor_seconds"]
        done = lambda: sum(  # noqa: E731
            1 for k in names if (s := timeline.latest(k)) and s.phase == "Succeeded" and s.at >= started[k]) >= n
        failed = [k for k, p in timeline.phases().items() if p == "Failed"]
        try:
            _wait(lambda: done() or bool([k for k, p in timeline.phases().items() if p == "Failed"]),
                  floor * 6 + n * 0.5 + 120, "every release Succeeded")
        except TimeoutError as e:
            out["error"] = str(e)
        failed = [k for k, p in timeline.phases().items() if p == "Failed"]
        dt, hi = time.monotonic() - t, time.time()
        text1 = scr.text()
        usage = procstat.usage(snap, procs.snapshot(), dt)
        out["release"] = {
            "seconds": round(dt, 1), "succeeded": sum(1 for k in names if (s := timeline.latest(k))
                                                     and s.phase == "Succeeded"),
            "failed": failed[:20], "failures_by_check": timeline.failures(lo),
            **release_measures(timeline, names, started, interval_s, step),
            "operator_cores": usage["operator"]["cores"], "operator_rss_mb": usage["operator"]["rss_mb"],
            "usage": usage,
            "operator_requests": round(Scraper.requests(scr, text1) - Scraper.requests(scr, text0)),
            "timings": timings(text0, text1),
        }
        # the Events of the last steps go out in the background: count them too (the operator's
        # requests counter still for 3 s, at most 60 s)
        settle(scr)
        out["release"]["outbox_drain_seconds"] = round(time.time() - hi, 1)
        hi = time.time()
        time.sleep(2)  # the audit log is written asynchronously
        audit = audit_requests(offset, lo, hi + 1, ns)
        out["release"]["requests_per_release"] = round(sum(audit.values()) / n, 1)
        out["release"]["audit_requests"] = audit
        if soak_minutes:
            out["soak"] = soak(ns, names, procs, soak_minutes, release_every, timeline)
        return out
    finally:
        timeline.stop.set()
        op.stop()
        try:
            kubernetes.client.CoreV1Api(client).delete_namespace(ns)
        except Exception:  # noqa: BLE001
            pass


def soak(ns: str, names: list[str], procs: procstat.Procs, minutes: float, every: int,
         timeline: fleet.Timeline) -> dict:
    """Releases every `every` s for `minutes`; the operator's RSS sampled every 10 s."""
    samples: list[tuple[float, float]] = []
    t0, wall0 = time.monotonic(), time.time()
    next_release, image, releases = t0, 3, 0
    while time.monotonic() - t0 < minutes * 60:
        if time.monotonic() >= next_release:
            fleet.release(ns, names, f"podinfo:{image}", {})
            image, releases, next_release = image + 1, releases + 1, next_release + every
        s = procs.snapshot().get("operator")
        if s is None:
            break
        samples.append((time.monotonic() - t0, s.rss_bytes / 2**20))
        time.sleep(10)
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    slope = None
    if len(samples) >= 3:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in samples) / sxx * 3600 if sxx else None
    phases = timeline.phases()
    return {"minutes": minutes, "release_every_seconds": every, "releases": releases,
            "rss_mb_first": ys[0] if ys else None, "rss_mb_last": ys[-1] if ys else None,
            "rss_mb_max": max(ys) if ys else None,
            "rss_slope_mb_per_hour": None if slope is None else round(slope, 2),
            "failed": sum(1 for p in phases.values() if p == "Failed"),
            "failures_by_check": timeline.failures(wall0),
            "samples": [(round(x), round(y, 1)) for x, y in samples]}


def table(r: dict) -> str:
    """The table of issue 12 for one run."""
    rel, idle = r.get("release", {}), r.get("idle", {})
    u = rel.get("usage", {})

    def pp(d: dict) -> str:
        return f"{d.get('p50')} / {d.get('p99')} s"
    rows = [
        ("all Initialized after", f"{r.get('all_initialized_after_seconds')} s"),
        ("idle: operator API requests/s, cores, RSS",
         f"{idle.get('operator_requests_per_second')}, {idle.get('operator_cores')}, {idle.get('operator_rss_mb')} MB"),
        ("reaction (image change to first status write) p50 / p99", pp(rel.get("reaction_seconds", {}))),
        ("weight-step lag beyond the interval p50 / p99", pp(rel.get("weight_step_lag_seconds", {}))),
        (f"promotion wall time p50 (floor {r.get('floor_seconds')} s)",
         f"{rel.get('promotion_wall_seconds', {}).get('p50')} s"),
        ("operator cores while releasing", f"{rel.get('operator_cores')} (RSS {rel.get('operator_rss_mb')} MB)"),
        ("  etcd / API server / controller-manager / podsim / trafficsim / prometheus cores",
         " / ".join(str(u.get(k, {}).get("cores")) for k in procstat.TESTBED)),
        ("requests per release", f"{rel.get('requests_per_release')}"),
        ("releases succeeded", f"{rel.get('succeeded')}/{r.get('canaries')}"),
    ]
    if "soak" in r:
        rows.append(("soak: RSS slope (MB/hour)", f"{r['soak'].get('rss_slope_mb_per_hour')}"))
    w = max(len(a) for a, _ in rows)
    return "\n".join([f"| {'':{w}} | {r.get('canaries')} Canaries |", f"|{'-' * (w + 2)}|---|"]
                     + [f"| {a:{w}} | {b} |" for a, b in rows])
