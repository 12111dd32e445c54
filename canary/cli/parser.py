"""The `canary` argument parser and `main`.

The global flags (`--kubeconfig`, `--context`, `-n/--namespace`, `-A`, `--request-timeout`,
`--as`, `--no-color`) are accepted before or after the subcommand, as kubectl's are."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from canary import security
from canary.cli.api import (
    DEFAULT_REQUEST_TIMEOUT,
    EXIT_ERROR,
    EXIT_PIPE,
    CliError,
    Ctx,
    KubeApi,
    Target,
)
from canary.cli.control import COMMANDS, cmd_command
from canary.cli.dashboard import cmd_dashboard
from canary.cli.explain import EXPLAIN_ENTRIES, cmd_explain
from canary.cli.offline import cmd_crds, cmd_operator, cmd_simulate
from canary.cli.status import cmd_status
from canary.cli.validate import cmd_validate
from canary.cli.watch import watching
from canary.cli.version import cmd_completion, cmd_complete, cmd_version
from canary.duration import parse_duration

EXIT_CODES = """exit codes:
  0    ok (status --wait: the release Succeeded; simulate: the outcome --expect wanted)
  1    failure or refusal: the release Failed, a command was refused or rejected,
       validate found errors, simulate's outcome is not the one --expect wanted
  2    usage error (unknown flag, missing argument)
  3    error: no cluster, unusable kubeconfig, unknown Canary, forbidden, CRDs not
       installed, a file that cannot be read
  124  timeout (--wait, --timeout)"""

EXAMPLES = """examples:
  {prog} get -A                                   every Canary you can read
  {prog} get podinfo -n shop --watch              the release live
  {prog} status podinfo --wait --timeout 15m      block until decided (CI)
  {prog} explain podinfo                          why it was promoted or rolled back
  {prog} dashboard -A                             a live web page of every Canary
  {prog} abort podinfo --reason "p99 doubled"     roll back now
  {prog} validate deploy/*.yaml -o github         check manifests in a pull request
  {prog} simulate canary.yaml --scenario s.yaml --expect Failed
  source <({prog} completion bash)                tab completion"""


def duration(text: str) -> float:
    """A Go duration (`90s`, `5m`, `1h30m`), or a number of seconds."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value


def request_timeout(text: str) -> float | None:
    value = duration(text)
    return None if value == 0 else value  # kubectl: 0 means no timeout


def _globals(suppress: bool) -> argparse.ArgumentParser:
    """The global flags; in a subcommand without defaults, so that one given before it stays."""
    p = argparse.ArgumentParser(add_help=False)

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("global flags (before or after the command)")
    g.add_argument("--kubeconfig", default=d(None), help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    g.add_argument("--context", default=d(None), help="the kubeconfig context to use")
    g.add_argument("-n", "--namespace", default=d(None), help="namespace (default: the context's, else default)")
    g.add_argument("-A", "--all-namespaces", action="store_true", default=d(False), help="every namespace")
    g.add_argument("--request-timeout", type=request_timeout, default=d(DEFAULT_REQUEST_TIMEOUT), metavar="DURATION",
                   help="time to wait for one API request (e.g. 10s; 0: no limit; default 30s)")
    g.add_argument("--as", dest="as_user", default=d(None), metavar="USER", help="impersonate this user")
    g.add_argument("--no-color", action="store_true", default=d(False), help="no colours (also: $NO_COLOR)")
    return p


def prog_name(argv0: str | None = None) -> str:
    base = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return "kubectl canary" if base.startswith("kubectl-canary") else "canary"


def build_parser(prog: str = "canary") -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog=prog, description="Progressive delivery for Kubernetes.",
                                 epilog=EXAMPLES.format(prog=prog) + "\n\n" + EXIT_CODES, formatter_class=fmt,
                                 parents=[_globals(False)])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    cluster = [_globals(True)]

    def add(name: str, help: str, *, parents: list[argparse.ArgumentParser] = cluster, examples: str = "",
            **kw: Any) -> argparse.ArgumentParser:
        epilog = (f"examples:\n{examples.format(prog=prog)}\n\n" if examples else "") + EXIT_CODES
        return sub.add_parser(name, help=help, description=kw.pop("description", help[:1].upper() + help[1:] + "."),
                              parents=parents, epilog=epilog, formatter_class=fmt, **kw)

    op = add("operator", "run the operator", parents=[])
    op.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file (default: in-cluster)")
    op.add_argument("--metrics-server", default="http://prometheus:9090", help="Prometheus URL for builtin metrics")
    op.add_argument("--mesh-provider", default="istio", help="istio | gatewayapi:v1 | gatewayapi:v1beta1")
    op.add_argument("--namespace", default=None, help="watch only this namespace (default: all)")
    op.add_argument("--label-selector", default=None, help="only Canaries with these labels (k=v,...)")
    op.add_argument("--selector-labels", default="app,name,app.kubernetes.io/name",
                    help="pod labels that select a workload's pods, first match wins (as Flagger's flag)")
    op.add_argument("--metrics-port", type=int, default=8080, help="port of the /metrics endpoint (0: off)")
    op.add_argument("--max-concurrent", type=int, default=200, help="ticks running at once")
    op.add_argument("--max-per-namespace", type=int, default=None,
                    help="a namespace's share of the ticks running at once (default: a fifth of "
                         "--max-concurrent); beyond it, it borrows while half of the slots stay free")
    op.add_argument("--kube-api-qps", type=float, default=0.0,
                    help="client-side limit of API requests per second (0: none)")
    op.add_argument("--kube-api-burst", type=int, default=100, help="requests allowed at once above the QPS")
    op.add_argument("--kube-api-connections", type=int, default=16,
                    help="API requests in flight at once, each on a kept-alive connection (the rest wait in order)")
    op.add_argument("--log-level", default="info")
    op.add_argument("--log-format", default="text", choices=["text", "json"],
                    help="json: one JSON object per line (time, level, logger, message, canary, namespace)")
    op.add_argument("--leader-election", action="store_true",
                    help="run several replicas: only the holder of a Lease acts")
    op.add_argument("--leader-election-namespace", default=None,
                    help="namespace of the Lease (default: the pod's namespace)")
    op.add_argument("--leader-election-id", default="canary-operator-leader",
                    help="name of the Lease (one per shard)")
    op.add_argument("--shards", type=int, default=1,
                    help="split the Canaries into N shards, one Lease each, claimed by the replicas (1: off)")
    op.add_argument("--shutdown-timeout", type=float, default=20.0,
                    help="on SIGTERM, seconds the running ticks get to finish")
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    security.add_arguments(op)
    op.add_argument("--alert-webhook", default=None,
                    help="generic JSON webhook for alerts of Canaries without analysis.alerts")
    op.add_argument("--event-webhook", default=None,
                    help="webhook that gets the Events of Canaries without event webhooks (Flagger's -event-webhook)")
    op.add_argument("--cluster-name", default="", help="the cluster's name, shown in every alert")
    op.set_defaults(func=cmd_operator)

    sim = add("simulate", "decide a release offline (real engine, virtual clock)", examples=(
        "  {prog} simulate canary.yaml --scenario bad-latency.yaml --expect Failed\n"
        "  {prog} simulate canary.yaml -o json --plot release.png\n"
        "  {prog} simulate canary.yaml --from-prometheus http://localhost:9090 --start -2h --end -1h --expect Failed"))
    sim.add_argument("canary", help="a Canary manifest")
    sim.add_argument("--scenario", help="YAML: metric values per step, webhook answers, readiness")
    sim.add_argument("--expect", choices=["Succeeded", "Failed"], help="exit 1 unless the outcome is this")
    sim.add_argument("--plot", metavar="FILE", help="draw the release: FILE.png, .svg or .html")
    sim.add_argument("--from-prometheus", metavar="URL",
                     help="replay a past window: every metric queried at each analysis step of --start..--end")
    sim.add_argument("--start", metavar="TIME", help="with --from-prometheus: RFC 3339, or before now (-30m)")
    sim.add_argument("--end", metavar="TIME", help="with --from-prometheus: RFC 3339, -5m or now (default)")
    sim.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    sim.set_defaults(func=cmd_simulate)

    v = add("validate", "check manifests as the operator will: Canaries, MetricTemplates, AlertProviders",
            examples=("  {prog} validate deploy/canary.yaml\n"
                      "  {prog} validate deploy/ -o github             annotations on the pull request\n"
                      "  {prog} validate canary.yaml --cluster         refs checked in the cluster too\n"
                      "  {prog} validate canary.yaml --prometheus http://localhost:9090"))
    v.add_argument("files", nargs="+", help="YAML files or directories (- : standard input)")
    v.add_argument("-o", "--output", choices=["text", "json", "github"], default="text")
    v.add_argument("--cluster", action="store_true",
                   help="also look up referenced MetricTemplates and AlertProviders in the cluster")
    v.add_argument("--prometheus", metavar="URL", help="run every metric query against this Prometheus now")
    v.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    v.set_defaults(func=cmd_validate)

    from canary import migrate  # offline: Flagger manifests to canary.dev/v1beta1 (canary/migrate.py)

    mig = migrate.build_parser(sub.add_parser("migrate", help="rewrite Flagger manifests for canary.dev"))
    mig.set_defaults(func=lambda args, ctx=None: migrate.run(args, *((ctx.out, ctx.err) if ctx else ())))

    s = add("status", "show Canaries: phase, weights, checks; --watch live, --wait for the outcome",
            aliases=["get"], examples=(
                "  {prog} get -A -o wide\n  {prog} get podinfo --watch\n"
                "  {prog} status podinfo --wait --timeout 10m\n  {prog} get -o name | xargs -n1 {prog} explain"))
    s.add_argument("name", nargs="?")
    s.add_argument("-o", "--output", choices=["text", "wide", "json", "yaml", "name"], default="text")
    s.add_argument("-w", "--watch", action="store_true",
                   help="live: a redrawn view on a terminal, else a line per change")
    s.add_argument("--wait", action="store_true",
                   help="with NAME: wait for the current release; exit 0 Succeeded, 1 Failed, 124 timeout")
    s.add_argument("--timeout", type=positive_duration, default=None, metavar="DURATION",
                   help="stop waiting or watching after this (e.g. 10m)")
    s.set_defaults(func=cmd_status, cmd="status")

    e = add("explain", "why a Canary was promoted or rolled back", description=(
        "The decision ledger (status.ledger) as a timeline: what was decided, by whom, and the check "
        "values against their thresholds."), examples="  {prog} explain podinfo --queries\n"
                                                      "  {prog} explain podinfo --plot podinfo.png")
    e.add_argument("name")
    e.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    e.add_argument("--queries", action="store_true", help="show every check with its query as executed")
    e.add_argument("--all", action="store_true", help=f"the whole ledger (default: the last {EXPLAIN_ENTRIES} entries)")
    e.add_argument("--plot", metavar="FILE", help="draw the ledger: FILE.png, .svg or .html")
    e.set_defaults(func=cmd_explain)

    helps = {
        "promote": "skip the remaining analysis and promote once the canary is ready",
        "abort": "roll back now (Failed), with a reason",
        "retry": "run a Failed revision again",
        "pause": "hold at the current weight (no steps, no deadlines) until resume",
        "resume": "continue a paused canary",
        "set-weight": "route N percent to the canary; the analysis continues from N",
    }
    for command in COMMANDS:
        weight = " 40" if command == "set-weight" else ""
        c = add(command, helps[command], examples=(f"  {{prog}} {command} podinfo{weight} --reason \"...\" --wait"))
        c.add_argument("name")
        if command == "set-weight":
            c.add_argument("weight", type=int)
        c.add_argument("--reason", default="", help="why (recorded in the ledger and the events)")
        c.add_argument("--by", default=None, help="who (default: the kubeconfig user, else $USER)")
        c.add_argument("--force", action="store_true", help="set the annotation even if it will be rejected")
        c.add_argument("--wait", action="store_true", help="wait until the operator decided it (exit 1: rejected)")
        c.add_argument("--timeout", type=positive_duration, default=60.0, metavar="DURATION",
                       help="how long to --wait (default 1m)")
        c.set_defaults(func=cmd_command, cmd=command)

    dash = add("dashboard", "serve a local web page of the Canaries, live (read-only unless --allow-actions)",
               description=("A local web page of every Canary of the namespace (-A: of every namespace you\n"
                            "can read), over your kubeconfig: phase, weights, images, checks as small charts,\n"
                            "gates, the last decisions, live (one watch, server-sent events), and a page per\n"
                            "Canary with the explain timeline drawn. Read-only unless --allow-actions."),
               examples=("  {prog} dashboard -A                      http://127.0.0.1:3100/\n"
                         "  {prog} dashboard -n shop --port 0          any free port (the URL is printed)\n"
                         "  {prog} dashboard --allow-actions           promote/abort/... buttons"))
    dash.add_argument("--address", default="127.0.0.1",
                      help="the address to listen on (default 127.0.0.1: only this machine)")
    dash.add_argument("--port", type=int, default=3100, help="the port (0: any free one; default 3100)")
    dash.add_argument("--allow-actions", action="store_true",
                      help="buttons for the control verbs (promote, abort, ...): the annotations they set")
    dash.set_defaults(func=cmd_dashboard)

    ver = add("version", "the client's version and, when reachable, the cluster's and the operator's")
    ver.add_argument("--client", action="store_true", help="only the client's")
    ver.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    ver.set_defaults(func=cmd_version)

    comp = add("completion", "print a shell completion script", parents=[], examples=(
        "  source <({prog} completion bash)       # bash, add it to ~/.bashrc\n"
        "  source <({prog} completion zsh)        # zsh\n  {prog} completion fish | source     # fish"))
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    comp.set_defaults(func=cmd_completion)
    hidden = sub.add_parser("__complete", parents=cluster, add_help=False)
    hidden.add_argument("words", nargs=argparse.REMAINDER)
    hidden.set_defaults(func=cmd_complete, build_parser=build_parser)

    c = add("crds", "print the CRDs", parents=[])
    c.set_defaults(func=cmd_crds)
    return ap


RELATIVE_TIME_FLAGS = ("--start", "--end")


def relative_times(argv: list[str]) -> list[str]:
    """`--start -30m` as `--start=-30m`: argparse takes a value starting with '-' for a flag."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in RELATIVE_TIME_FLAGS and len(nxt) > 1 and nxt[0] == "-" and nxt[1].isdigit():
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: list[str] | None = None, ctx: Ctx | None = None) -> int:
    """Run one command; tests pass a Ctx with a fake Api, streams and clocks."""
    args = build_parser(prog_name()).parse_args(relative_times(sys.argv[1:] if argv is None else list(argv)))
    if ctx is None:
        ctx = Ctx(api_factory=lambda: KubeApi(target=Target.of(args)))
    if getattr(args, "no_color", False) or os.environ.get("NO_COLOR"):
        ctx.color = False
    code = _run(args, ctx)
    if watching():
        # a watch thread blocked in a TLS read would abort the interpreter's shutdown
        # (SIGABRT): the output is complete, so leave now
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _run(args: argparse.Namespace, ctx: Ctx) -> int:
    try:
        return int(args.func(args, ctx))
    except CliError as e:
        print(f"error: {e}", file=ctx.err, flush=True)
        return EXIT_ERROR
    except BrokenPipeError:
        # `canary get | head -1`: the reader has gone; say nothing more, as kubectl does
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_PIPE
    except KeyboardInterrupt:
        return 130


def kubectl_complete() -> int:
    """`kubectl_complete-canary`: kubectl's plugin completion (Cobra's protocol: one candidate
    per line, then `:4`, no file completion)."""
    argv = [a for a in sys.argv[1:] if a != "__complete"]
    code = main(["__complete", *argv])
    sys.stdout.write(":4\n")
    return code
