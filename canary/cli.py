"""The `canary` command (also installed as the kubectl plugin `kubectl-canary`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

PHASE_ORDER = ("Succeeded", "Failed")


def _setup_logging(level: str, fmt: str) -> None:
    if fmt == "json":
        logging.basicConfig(level=level.upper(), format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}')
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_operator(args) -> int:
    from canary.operator import Options, main

    _setup_logging(args.log_level, args.log_format)
    main(
        Options(
            kubeconfig=args.kubeconfig,
            metrics_server=args.metrics_server,
            mesh_provider=args.mesh_provider,
            namespace=args.namespace,
            label_selector=args.label_selector,
            metrics_port=args.metrics_port,
            max_concurrent=args.max_concurrent,
        )
    )
    return 0


def cmd_validate(args) -> int:
    """Validate Canary manifests offline against the models (what the operator will accept)."""
    from pydantic import ValidationError

    from canary.models import Canary

    bad = 0
    for f in args.files:
        for doc in yaml.safe_load_all(Path(f).read_text()):
            if not doc or doc.get("kind") != "Canary":
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            try:
                Canary.from_obj(doc)
                print(f"{f}: Canary {name}: ok")
            except ValidationError as e:
                bad += 1
                for err in e.errors():
                    loc = ".".join(str(x) for x in err["loc"])
                    print(f"{f}: Canary {name}: {loc}: {err['msg']}", file=sys.stderr)
    return 1 if bad else 0


def _custom_api(kubeconfig: str | None):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    return kubernetes.client.CustomObjectsApi(client)


def cmd_status(args) -> int:
    import time

    api = _custom_api(args.kubeconfig)
    ns = args.namespace or "default"

    def rows():
        if args.name:
            return [api.get_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries", args.name)]
        if args.all_namespaces:
            return api.list_cluster_custom_object("canary.dev", "v1beta1", "canaries")["items"]
        return api.list_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries")["items"]

    def line(obj) -> str:
        st = obj.get("status") or {}
        meta = obj["metadata"]
        fail = st.get("lastFailure") or {}
        extra = f"  last failure: {fail.get('message')}" if fail and st.get("phase") == "Failed" else ""
        return (f"{meta['namespace']}/{meta['name']:<24} {st.get('phase') or '-':<17} "
                f"weight={st.get('canaryWeight', 0):<3} failedChecks={st.get('failedChecks', 0)}{extra}")

    while True:
        items = rows()
        if args.output == "json":
            print(json.dumps(items if not args.name else items[0], indent=2))
        else:
            for obj in items:
                print(line(obj))
        if args.wait and args.name:
            phase = (items[0].get("status") or {}).get("phase")
            if phase == "Succeeded":
                return 0
            if phase == "Failed":
                return 1
            time.sleep(1)
            continue
        if not args.watch:
            return 0
        time.sleep(2)


def cmd_crds(args) -> int:
    root = Path(__file__).resolve().parent.parent / "crds"
    for f in sorted(root.glob("*.yaml")):
        sys.stdout.write(f.read_text())
        if not f.read_text().endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.write("---\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="canary", description="Progressive delivery for Kubernetes.")
    ap.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    op = sub.add_parser("operator", help="run the operator")
    op.add_argument("--metrics-server", default="http://prometheus:9090", help="Prometheus URL for builtin metrics")
    op.add_argument("--mesh-provider", default="istio", help="istio | gatewayapi:v1 | gatewayapi:v1beta1")
    op.add_argument("--namespace", default=None, help="watch only this namespace (default: all)")
    op.add_argument("--label-selector", default=None, help="only Canaries with these labels (k=v,...)")
    op.add_argument("--metrics-port", type=int, default=8080, help="port of the /metrics endpoint (0: off)")
    op.add_argument("--max-concurrent", type=int, default=50, help="ticks running at once")
    op.add_argument("--log-level", default="info")
    op.add_argument("--log-format", default="text", choices=["text", "json"])
    op.set_defaults(func=cmd_operator)

    v = sub.add_parser("validate", help="check Canary manifests offline")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("status", aliases=["get"], help="one line per Canary")
    s.add_argument("name", nargs="?")
    s.add_argument("-n", "--namespace")
    s.add_argument("-A", "--all-namespaces", action="store_true")
    s.add_argument("-o", "--output", choices=["text", "json"], default="text")
    s.add_argument("--watch", action="store_true")
    s.add_argument("--wait", action="store_true", help="with NAME: exit 0 on Succeeded, 1 on Failed")
    s.set_defaults(func=cmd_status)

    c = sub.add_parser("crds", help="print the CRDs")
    c.set_defaults(func=cmd_crds)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
