"""The verbs that need no cluster (operator aside, which is the cluster's side): operator,
simulate, validate, crds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from canary import security
from canary import logs
from canary.cli.api import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, CliError, Ctx
from canary.cli.files import Doc, read_docs
from canary.cli.plot import from_simulation, write
from canary.cli.spark import resample, sparkline
from canary.cli.views import cut
from canary.simulate import Check, Result, render


def cmd_operator(args: argparse.Namespace, ctx: object = None) -> int:
    from canary.operator import Options, main

    logs.setup(args.log_level, args.log_format)
    main(
        Options(
            kubeconfig=args.kubeconfig,
            metrics_server=args.metrics_server,
            mesh_provider=args.mesh_provider,
            namespace=args.namespace,
            label_selector=args.label_selector,
            selector_labels=tuple(x.strip() for x in args.selector_labels.split(",") if x.strip()),
            metrics_port=args.metrics_port,
            max_concurrent=args.max_concurrent,
            max_per_namespace=args.max_per_namespace,
            kube_qps=args.kube_api_qps,
            kube_burst=args.kube_api_burst,
            kube_connections=max(1, args.kube_api_connections),
            leader_election=args.leader_election,
            leader_election_namespace=args.leader_election_namespace,
            leader_election_id=args.leader_election_id,
            shutdown_timeout=args.shutdown_timeout,
            shards=args.shards,
            liveness=args.liveness,
            alert_webhook=args.alert_webhook,
            event_webhook=args.event_webhook,
            cluster_name=args.cluster_name,
            security=security.from_args(args),
        )
    )
    return 0


def _canary_doc(path: str) -> tuple[Doc, dict]:
    docs = [d for d in read_docs(path) if isinstance(d.data, dict) and d.data.get("kind") == "Canary"]
    if not docs:
        raise CliError(f"{path}: no Canary found (a document with kind: Canary)")
    doc = docs[0]
    data = dict(doc.data)
    data["metadata"] = dict(data.get("metadata") or {})
    data["metadata"].setdefault("namespace", "default")
    return doc, data


def summary(result: Result, width: int = 48) -> list[str]:
    """Sparklines: the weight, then each metric (its failing steps marked below it)."""
    weights = resample([float(p.weight) for p in result.points], width)
    lines = [f"{'weight':<22} {sparkline(weights, width, 0, 100)}  "
             f"max {max((p.weight for p in result.points), default=0)}%"]
    names: dict[str, list[Check]] = {}
    for p in result.points:
        for c in p.checks:
            names.setdefault(c.name, []).append(c)
    for name, checks in names.items():
        values = resample([c.value for c in checks], width)
        failed = sum(1 for c in checks if not c.ok)
        last = checks[-1]
        bound = ", ".join(x for x in (f"min {last.min:g}" if last.min is not None else "",
                                      f"max {last.max:g}" if last.max is not None else "") if x)
        lines.append(f"{cut(name, 22):<22} {sparkline(values, width)}  {bound}"
                     + (f", {failed} of {len(checks)} failed" if failed else ""))
    return lines


def cmd_simulate(args: argparse.Namespace, ctx: Ctx) -> int:
    """Decide a release offline with the real engine and a virtual clock."""
    from pydantic import ValidationError

    from canary.models import Canary
    from canary.simulate import ScenarioError, load_scenario, simulate

    doc, data = _canary_doc(args.canary)
    try:
        canary = Canary.from_obj(data)
    except ValidationError as e:
        raise CliError(f"{doc.file}: invalid Canary (canary validate {doc.file} says more): "
                       + "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:3]))
    scenario_data = None
    if args.scenario:
        docs = read_docs(args.scenario)
        scenario_data = docs[0].data if docs else {}
    rec = None
    if getattr(args, "from_prometheus", None):  # a past window of real metrics (canary/cli/replay.py)
        from canary.cli.replay import parse_time, replay, scenario_of, templates_in

        if not args.start:
            raise CliError("--from-prometheus needs --start (RFC 3339, or before now: -30m)")
        now = ctx.clock()
        start, end = parse_time(args.start, now, "--start"), parse_time(args.end or "now", now, "--end")
        rec = replay(canary, args.from_prometheus, start, end, templates_in(args.canary, canary))
        scenario_data = scenario_of(scenario_data, rec)
    elif getattr(args, "start", None) or getattr(args, "end", None):
        raise CliError("--start and --end go with --from-prometheus URL")
    try:
        scenario = load_scenario(scenario_data, canary)
    except ScenarioError as e:
        raise CliError(f"{args.scenario or 'the replay'}: "
                       + "; ".join(f"{p}: {m}" if p else m for p, m in e.problems)) from None
    result = simulate(canary, scenario)
    warnings: list[str] = []
    if rec is not None:
        from canary.cli.replay import notes

        warnings = notes(rec, sum(1 for p in result.points if p.checks))
    if args.plot:
        analysis = canary.spec.analysis
        series = from_simulation(result, f"{canary.namespace}/{canary.name}",
                                 analysis.max_weight_value if analysis else 100)
        write(series, args.plot)
    data = result.as_dict()
    if rec is not None:
        data["replay"] = {**rec.as_dict(), "warnings": warnings}
    if args.output == "json":
        ctx.print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        ctx.print(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        if rec is not None:
            ctx.print(rec.header())
            for w in warnings:
                ctx.print(w)
        ctx.print(render(result))
        ctx.print("\n".join(summary(result)))
        if args.plot:
            ctx.print(f"plot: {args.plot}")
    if args.expect:
        if result.outcome != args.expect:
            print(f"expected {args.expect}, the outcome is {result.outcome}", file=ctx.err, flush=True)
            return EXIT_FAILED
        return EXIT_OK
    return EXIT_OK if result.outcome in ("Succeeded", "Failed") else EXIT_TIMEOUT


def cmd_crds(args: argparse.Namespace, ctx: Ctx | None = None) -> int:
    root = Path(__file__).resolve().parent.parent.parent / "crds"
    for f in sorted(root.glob("*.yaml")):
        sys.stdout.write(f.read_text())
        if not f.read_text().endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.write("---\n")
    return 0

