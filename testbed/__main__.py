"""`python -m testbed up|down|status|build` — the local testbed."""

from __future__ import annotations

import argparse
import json
import sys

from . import cluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start everything that is not running (idempotent)")
    u.add_argument("--rbac", action="store_true", help="start the apiserver with --authorization-mode=RBAC")
    sub.add_parser("down", help="stop exactly what `up` started")
    sub.add_parser("status", help="print what runs and where (JSON)")
    sub.add_parser("build", help="build or reuse the cached Kubernetes binaries")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            info = cluster.up(rbac=args.rbac)
            print(json.dumps(info, indent=2))
            cluster.say(
                f"up in {info['started_in_seconds']}s: API {info['api_server']} "
                f"(kubeconfig {info['kubeconfig']}), Prometheus {info['prometheus']}"
            )
        elif args.cmd == "down":
            stopped = cluster.down()
            cluster.say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.cmd == "status":
            info = cluster.status()
            print(json.dumps(info, indent=2))
            return 0 if info["running"] else 3
        elif args.cmd == "build":
            cluster.check_prerequisites(build=True)
    except cluster.TestbedError as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
