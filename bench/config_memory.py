"""The operator's memory with many large ConfigMaps in the cluster (issue 10, item 5).

The watch caches keep metadata and a checksum of each ConfigMap and Secret, never the content,
so a tenant with a few hundred 1 MiB ConfigMaps cannot push the operator out of memory, and a
heap dump exposes no Secret. This measures it on the testbed, for the operator of this checkout
and (with `--before DIR`) the one of an older commit:

* started, then N ConfigMaps of SIZE KiB created while it runs (its watch receives them one by
  one, so what stays in memory is what its caches keep), RSS read once it has settled;
* started with the N ConfigMaps already there (the initial listing, in pages of 50).

What stays is the C allocator's, not the caches': glibc's dynamic mmap threshold served every
large event after the first from a heap that does not shrink, until canary/heap.py pinned it
(300 x 1 MiB: 252 MiB after arrival, 347 MiB at a restart; pinned 110 and 111; 93 without them).

    python -m bench.config_memory [--configmaps 1000] [--kib 100] [--before /tmp/old]

Writes bench-results/config-memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

from testbed import cluster, ops

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-config-memory"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fill(api_client, count: int, kib: int) -> float:
    """N ConfigMaps in the benchmark's namespace; seconds it took."""
    core = kubernetes.client.CoreV1Api(api_client)
    ops.ensure_namespace(api_client, NAMESPACE)
    payload = "x" * (kib * 1024)
    existing = {c.metadata.name for c in core.list_namespaced_config_map(NAMESPACE).items}

    def make(i: int) -> None:
        name = f"big-{i:05d}"
        if name not in existing:
            core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name}, "data": {"blob": payload}})

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(count)))
    return time.monotonic() - started


def start(checkout: Path) -> tuple[subprocess.Popen, object]:
    p = cluster.paths()
    log = open(p.logs / f"bench-config-memory-{checkout.name}.log", "ab")
    argv = [sys.executable, "-u", "-m", "canary.cli", "--kubeconfig", str(p.kubeconfig("operator")),
            "operator", "--metrics-server", cluster.PROM_URL]
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, cwd=str(checkout), stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    return proc, log


def settle(proc: subprocess.Popen, checkout: Path, timeout: float = 90.0) -> float:
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"the operator of {checkout} exited")
        samples.append(rss_mib(proc.pid))
        last = samples[-8:]
        if len(samples) >= 12 and max(last) - min(last) < 0.01 * max(last):
            break
    return round(max(samples[-8:]), 1)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def measure(api_client, checkout: Path, count: int, kib: int) -> dict:
    """RSS before and after N ConfigMaps arrive through the watch, then at a restart with them."""
    clear(api_client)
    proc, _ = start(checkout)
    try:
        empty = settle(proc, checkout)
        fill(api_client, count, kib)
        arrived = settle(proc, checkout)
    finally:
        stop(proc)
    proc, _ = start(checkout)
    try:
        restarted = settle(proc, checkout)
    finally:
        stop(proc)
    return {"checkout": str(checkout), "rss_mib_empty": empty, "rss_mib_after_arrival": arrived,
            "retained_mib": round(arrived - empty, 1), "rss_mib_started_with_them": restarted}


def clear(api_client) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.delete_namespace(NAMESPACE)
    except kubernetes.client.ApiException:
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            core.read_namespace(NAMESPACE)
        except kubernetes.client.ApiException:
            return
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configmaps", type=int, default=1000)
    parser.add_argument("--kib", type=int, default=100)
    parser.add_argument("--before", type=Path, default=None, help="a checkout of an older commit to compare")
    parser.add_argument("--keep", action="store_true", help="leave the ConfigMaps in place")
    args = parser.parse_args()
    cluster.up()
    cluster.install_crds(cluster.paths(), [REPO / "crds"])
    api_client = ops.api_client()
    runs = {"now": measure(api_client, REPO, args.configmaps, args.kib)}
    if args.before is not None:
        runs["before"] = measure(api_client, args.before.resolve(), args.configmaps, args.kib)
    result = {"configmaps": args.configmaps, "kib_each": args.kib, **runs}
    out = REPO / "bench-results" / "config-memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.keep:
        clear(api_client)


if __name__ == "__main__":
    main()
