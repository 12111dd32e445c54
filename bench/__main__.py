"""Benchmarks on the local testbed (`make bench`): results as JSON in bench-results/.

(a) reaction latency: pod-template change -> phase Progressing, per Canary;
(b) promotion wall time against its floor (steps x interval);
(c) operator API requests per Canary per analysis step, counted in the apiserver's audit
    log for the operator's own identity.

These are measurements, not pass/fail tests; the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import kubernetes

from testbed import cluster, ops

REPO = Path(__file__).resolve().parent.parent
OPERATOR_USER = cluster.IDENTITIES["operator"][1]


def _deployment(name: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"sim.canary.dev/error-rate": "0"}},
                "spec": {"containers": [{"name": "app", "image": "podinfo:1", "ports": [{"containerPort": 9898}]}]},
            },
        },
    }


def _canary(name: str, interval: str, step: int, max_weight: int) -> dict:
    return {
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {
                "interval": interval,
                "threshold": 5,
                "stepWeight": step,
                "maxWeight": max_weight,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 90}, "interval": "10s"}],
            },
        },
    }


def _audit_entries(namespace: str) -> list[tuple[float, str, str]]:
    """(time, object name, "verb resource[/sub]") of the operator's requests in `namespace`."""
    out = []
    with open(cluster.paths().audit_log) as f:
        for line in f:
            if OPERATOR_USER not in line or namespace not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("stage") != "ResponseComplete" or (e.get("user") or {}).get("username") != OPERATOR_USER:
                continue
            if e.get("verb") == "watch":
                continue
            ref = e.get("objectRef") or {}
            if ref.get("namespace") != namespace:
                continue
            ts = datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            what = f"{e['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
            out.append((ts, ref.get("name") or "", what))
    return out


def _belongs(obj_name: str, canary: str) -> bool:
    """Requests for a Canary's own objects: itself, its Deployments, Services, routes, events."""
    return obj_name == canary or obj_name.startswith(canary + "-") or obj_name.startswith(canary + ".")


def _audit_count(since: datetime, until: datetime, namespace: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    lo, hi = since.timestamp(), until.timestamp()
    for ts, _, what in _audit_entries(namespace):
        if lo <= ts <= hi:
            counts[what] = counts.get(what, 0) + 1
    return counts

def run(n: int, interval_s: int, step: int, max_weight: int) -> dict:
    client = ops.api_client()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    ops.ensure_namespace(client, ns)
    op = ops.OperatorProcess(name="bench-operator", metrics_port=0).start()
    names = [f"app{i:02d}" for i in range(n)]
    try:
        for name in names:
            ops.apply(client, _deployment(name), ns)
            ops.apply(client, _canary(name, f"{interval_s}s", step, max_weight), ns)
        for name in names:
            ops.wait_until(lambda name=name: ops.canary_status(client, ns, name).get("phase") == "Initialized",
                           120, f"{name} Initialized")
        time.sleep(2)

        # (a) + (b): trigger all releases one after another, watch each
        api = kubernetes.client.CustomObjectsApi(client)
        started: dict[str, float] = {}
        progressing_at: dict[str, float] = {}
        succeeded_at: dict[str, float] = {}
        step_times: dict[str, dict[int, float]] = {k: {} for k in names}  # weight -> wall time first seen
        t_start = datetime.now(timezone.utc)
        for name in names:
            started[name] = time.monotonic()
            ops.patch_deployment(client, ns, name, image="podinfo:2")
        deadline = time.monotonic() + 60 + (max_weight // step + 3) * interval_s * 2
        while len(succeeded_at) < n and time.monotonic() < deadline:
            items = api.list_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries")["items"]
            now = time.monotonic()
            for obj in items:
                name = obj["metadata"]["name"]
                phase = (obj.get("status") or {}).get("phase")
                weight = (obj.get("status") or {}).get("canaryWeight") or 0
                if phase == "Progressing" and weight > 0:
                    step_times[name].setdefault(weight, time.time())
                if phase in ("Progressing", "Promoting", "Finalising", "Succeeded") and name not in progressing_at:
                    progressing_at[name] = now
                if phase == "Succeeded" and name not in succeeded_at and name in progressing_at:
                    succeeded_at[name] = now
                if phase == "Failed":
                    raise RuntimeError(f"{name} failed during the benchmark")
            time.sleep(0.1)
        t_end = datetime.now(timezone.utc)
        if len(succeeded_at) < n:
            raise RuntimeError(f"only {len(succeeded_at)}/{n} releases finished")

        latencies = sorted(progressing_at[k] - started[k] for k in names)
        walls = sorted(succeeded_at[k] - started[k] for k in names)
        weight_steps = -(-max_weight // step)
        # the first step is taken as soon as the canary is ready; each later step, and the
        # promotion after the last one, waits one interval
        floor = weight_steps * interval_s
        time.sleep(1.5)  # let the audit log flush
        audit = _audit_count(t_start, t_end, ns)
        total = sum(audit.values())
        steps_per_canary = weight_steps + 2  # weight steps + promote + finalise
        # steady state of an analysis: the requests between the first and the last weight step
        # of each Canary, divided by the steps taken in that window
        entries = _audit_entries(ns)
        window_requests, window_steps, window_kinds = 0, 0, {}
        for name in names:
            times = sorted(step_times[name].values())
            if len(times) < 2:
                continue
            lo, hi = times[0] + 0.3, times[-1] + 0.3
            for ts, obj_name, what in entries:
                if lo < ts <= hi and _belongs(obj_name, name):
                    window_requests += 1
                    window_kinds[what] = window_kinds.get(what, 0) + 1
            window_steps += len(times) - 1
        return {
            "time": t_start.isoformat(),
            "canaries": n,
            "interval_seconds": interval_s,
            "step_weight": step,
            "max_weight": max_weight,
            "reaction_latency_seconds": {
                "median": round(statistics.median(latencies), 3),
                "p90": round(latencies[int(0.9 * (n - 1))], 3),
                "max": round(latencies[-1], 3),
            },
            "promotion_wall_seconds": {
                "median": round(statistics.median(walls), 2),
                "max": round(walls[-1], 2),
                "floor": floor,
                "median_over_floor": round(statistics.median(walls) - floor, 2),
            },
            "api_requests": {
                "per_canary_per_analysis_step": round(window_requests / max(window_steps, 1), 2),
                "analysis_steps_measured": window_steps,
                "analysis_step_requests": dict(sorted(window_kinds.items())),
                "per_release": round(total / n, 1),
                "total": total,
                "per_canary_per_tick_whole_release": round(total / (n * steps_per_canary), 2),
                "steps_per_canary": steps_per_canary,
                "by_verb_and_resource": dict(sorted(audit.items())),
            },
        }
    finally:
        op.stop()
        try:
            kubernetes.client.CoreV1Api(client).delete_namespace(ns)
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--canaries", type=int, default=10)
    ap.add_argument("--interval", type=int, default=3)
    ap.add_argument("--step-weight", type=int, default=20)
    ap.add_argument("--max-weight", type=int, default=60)
    ap.add_argument("--out", default=str(REPO / "bench-results"))
    args = ap.parse_args(argv)
    was_running = cluster.status()["running"]
    cluster.up()
    cluster.install_crds(cluster.paths(), [REPO / "crds"])
    try:
        # one release alone (the latency an app team sees), then many at once (contention on
        # 2 cores shared with the whole testbed)
        result = {
            "single": run(1, args.interval, args.step_weight, args.max_weight),
            "concurrent": run(args.canaries, args.interval, args.step_weight, args.max_weight),
        }
    finally:
        if not was_running:
            cluster.down()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    f = out / "operator.json"
    f.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
