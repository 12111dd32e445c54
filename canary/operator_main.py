"""`python -m canary.operator_main [--kubeconfig K] operator [flags]`: `canary operator` with the
leader-election, shutdown and liveness flags, for as long as `canary/cli.py` lacks them.

Same parser as the `canary` command (flags that cli.py already has are not added twice), so it
can be removed once cli.py passes these flags to `Options` itself.
"""

from __future__ import annotations

import argparse
import sys

from canary import cli
from canary.leader import DEFAULT_NAME

EXTRA_FLAGS: list[tuple[str, dict]] = [
    ("--leader-election", {"action": "store_true",
                           "help": "run several replicas: only the holder of a Lease acts"}),
    ("--leader-election-namespace", {"default": None,
                                     "help": "namespace of the Lease (default: the pod's namespace)"}),
    ("--leader-election-id", {"default": DEFAULT_NAME,
                              "help": "name of the Lease (one per shard)"}),
    ("--shutdown-timeout", {"type": float, "default": 20.0,
                            "help": "on SIGTERM, seconds the running ticks get to finish"}),
    ("--liveness", {"default": None,
                    "help": "liveness endpoint, e.g. http://0.0.0.0:8081/healthz (default: none)"}),
]


def build_parser() -> argparse.ArgumentParser:
    ap = cli.build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    op = sub.choices["operator"]
    have = {s for a in op._actions for s in a.option_strings}
    for flag, kwargs in EXTRA_FLAGS:
        if flag not in have:
            op.add_argument(flag, **kwargs)
    op.set_defaults(func=cmd_operator)
    return ap


def cmd_operator(args) -> int:
    from canary.operator import Options, main

    cli._setup_logging(args.log_level, args.log_format)
    main(Options(
        kubeconfig=args.kubeconfig,
        metrics_server=args.metrics_server,
        mesh_provider=args.mesh_provider,
        namespace=args.namespace,
        label_selector=args.label_selector,
        metrics_port=args.metrics_port,
        max_concurrent=args.max_concurrent,
        alert_webhook=getattr(args, "alert_webhook", None),
        leader_election=args.leader_election,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        shutdown_timeout=args.shutdown_timeout,
        liveness=args.liveness,
    ))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
