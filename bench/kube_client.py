"""The operator's API client under a burst, on the testbed's real API server (issue 12: "find
out which part of the lag is ours").

`python -m bench.kube_client --concurrency 200 --connections 0 216`: for each pool size (0:
httpx's default pool, 100 open and 20 kept alive, as the client had before), C
workers each merge-PATCH their own ConfigMap as fast as they can for S seconds through
`canary.adapters.kube.Kube`, as a tick burst does. Reports requests/s, latency p50/p99 as the
operator times it (pool wait included), the TCP connections the client opened (counted in
httpcore's network backend), and the cores of the client, the API server and etcd. JSON
in bench-results/kube_client.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx

from bench import procstat
from bench.run import dist
from canary.adapters.kube import Kube
from testbed import cluster

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-kube-client"


class _Counting:
    """httpcore's network backend, counting the TCP connections it opens."""

    def __init__(self, inner):
        self.inner, self.opened = inner, 0

    async def connect_tcp(self, *args, **kwargs):
        self.opened += 1
        return await self.inner.connect_tcp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def _one(connections: int, concurrency: int, seconds: float) -> dict:
    kube = Kube.from_config(str(cluster.paths().kubeconfig("operator")), connections=max(connections, 1))
    if connections == 0:  # httpx's default pool, as the client had it before: 100 open, 20 kept alive
        ctx = kube._http._transport._pool._ssl_context  # type: ignore[attr-defined]
        kube._http._transport = httpx.AsyncHTTPTransport(verify=ctx, limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=20))
        kube._inflight = asyncio.Semaphore(10**6)  # and no queue of our own
    if await kube.get("v1", "namespaces", None, NAMESPACE) is None:
        await kube.create("v1", "namespaces", None,
                          {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    names = [f"cm-{i}" for i in range(concurrency)]
    for n in names:
        if await kube.get("v1", "configmaps", NAMESPACE, n) is None:
            await kube.create("v1", "configmaps", NAMESPACE,
                              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {}})
    counter = _Counting(kube._http._transport._pool._network_backend)  # type: ignore[attr-defined]
    kube._http._transport._pool._network_backend = counter  # type: ignore[attr-defined]
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(name: str) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            started = time.perf_counter()
            await kube.patch("v1", "configmaps", NAMESPACE, name, {"data": {"i": str(i)}})
            latencies.append(time.perf_counter() - started)

    procs = procstat.Procs({"client": os.getpid()})
    before, t0 = procs.snapshot(), time.monotonic()
    await asyncio.gather(*(worker(n) for n in names))
    elapsed = time.monotonic() - t0
    usage = procstat.usage(before, procs.snapshot(), elapsed)
    await kube.aclose()
    return {"connections": connections, "concurrency": concurrency, "seconds": round(elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "latency_s": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dist(latencies).items()},
            "tcp_connections_opened": counter.opened,
            "cores": {k: usage[k]["cores"] for k in ("client", "kube-apiserver", "etcd") if k in usage}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kube_client")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[0, 216])
    ap.add_argument("--out", default=str(REPO / "bench-results" / "kube_client.json"))
    args = ap.parse_args(argv)
    cluster.up()
    results = [asyncio.run(_one(c, args.concurrency, args.seconds)) for c in args.connections]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
