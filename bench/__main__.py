"""The operator's benchmark on the local testbed (`make bench`, `python -m bench --canaries 1000`).

One run: N Canaries (interval 10 s, two weight steps, a constant MetricTemplate check) are
created, the operator is started, and every release is triggered at once. Written as JSON to
bench-results/operator.json (and printed), with the table of issue 12:

    all Initialized after (from the operator's start), idle API requests/s + cores + RSS,
    reaction (image change to the first status write) p50/p99, weight-step lag beyond the
    interval p50/p99, promotion wall time p50, cores while releasing, requests per release,

plus where the time went (the operator's phase and API-request histograms, from its /metrics)
and the CPU and RSS of the operator, the API server, etcd and the simulators during each part.

`--soak-minutes M --release-every S`: after that, a release of every Canary each S seconds for M
minutes, RSS sampled every 10 s; reports its slope (MB per hour) by least squares.

These are measurements, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testbed import cluster

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--canaries", type=int, default=100)
    ap.add_argument("--interval", type=int, default=10, help="analysis interval, seconds")
    ap.add_argument("--step-weight", type=int, default=25)
    ap.add_argument("--max-weight", type=int, default=50)
    ap.add_argument("--idle-seconds", type=int, default=30, help="length of the idle measurement")
    ap.add_argument("--soak-minutes", type=float, default=0, help="0: no soak")
    ap.add_argument("--release-every", type=int, default=180, help="soak: seconds between releases")
    ap.add_argument("--operator-arg", action="append", default=[], help="extra operator flag (repeatable)")
    ap.add_argument("--out", default=str(REPO / "bench-results" / "operator.json"))
    args = ap.parse_args(argv)
    from bench import run as bench_run

    was_running = cluster.status()["running"]
    cluster.up()
    cluster.install_crds(cluster.paths(), [REPO / "crds"])
    try:
        result = bench_run.run(args.canaries, args.interval, args.step_weight, args.max_weight,
                               idle_s=args.idle_seconds, soak_minutes=args.soak_minutes,
                               release_every=args.release_every, operator_args=args.operator_arg)
    finally:
        if not was_running:
            cluster.down()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(bench_run.table(result), file=sys.stderr)
    print(f"written to {out} ({time.strftime('%H:%M:%S')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
