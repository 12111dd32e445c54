"""`canary migrate`: Flagger manifests (flagger.app/v1beta1) rewritten for canary.dev/v1beta1.

The API is field-compatible, so the only rewrite is the ``apiVersion`` of Canary,
MetricTemplate and AlertProvider documents; everything else in a file (comments, blank lines,
key order, quoting, flow style, other kinds such as Deployments, Helm-free templates) stays
byte for byte. The YAML is parsed with PyYAML's composer, which gives the position of every
scalar, and only the ``apiVersion`` value is spliced in place. A round-trip library would
re-emit whole documents (and reflow some of them); splicing keeps a GitOps diff to the lines
that changed.

Besides the rewrite, every field whose behaviour here differs from Flagger's is reported with
its file and line (the list of docs/design.md, docs/alerts.md and docs/metrics.md), and
providers this operator does not implement are errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FLAGGER", "OURS", "Finding", "Result", "main", "migrate_text", "migrate_paths"]

FLAGGER = "flagger.app/v1beta1"
OURS = "canary.dev/v1beta1"
KINDS = ("Canary", "MetricTemplate", "AlertProvider")
ROUTERS = ("istio", "gatewayapi:v1", "gatewayapi:v1beta1")
SEVERITIES = ("error", "differs", "changed")


@dataclass(frozen=True)
class Finding:
    severity: str  # error | differs | changed
    path: str
    line: int  # 1-based
    kind: str
    name: str
    field: str
    message: str

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.severity}: {self.kind} {self.name}: {self.field}: {self.message}"


@dataclass
class Result:
    path: str
    text: str  # the migrated text
    changed: bool
    findings: list[Finding] = field(default_factory=list)


# ---- positions --------------------------------------------------------------------------------


def _get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _at(node: yaml.Node | None, *keys: str) -> yaml.Node | None:
    for key in keys:
        node = _get(node, key)
    return node


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 0


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _scalar(node: yaml.Node | None) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    return yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value


# ---- what behaves differently -------------------------------------------------------------------


def _duration_seconds(value: Any) -> float | None:
    from canary.duration import parse_duration

    try:
        return parse_duration(str(value))
    except (ValueError, TypeError):
        return None


class _Report:
    def __init__(self, path: str, kind: str, name: str):
        self.path, self.kind, self.name = path, kind, name
        self.findings: list[Finding] = []

    def add(self, severity: str, node: yaml.Node | None, field_: str, message: str) -> None:
        self.findings.append(Finding(severity, self.path, _line(node), self.kind, self.name, field_, message))


def _canary(spec: yaml.Node | None, r: _Report) -> None:
    provider = _get(spec, "provider")
    value = _scalar(provider)
    if value and value not in ROUTERS:
        r.add("error", provider, "spec.provider",
              f"{value!r} is not implemented here (routers: {', '.join(ROUTERS)}); the Canary would get a "
              "Valid=False condition and no traffic change")
    if _get(spec, "autoscalerRef") is not None:
        r.add("differs", _get(spec, "autoscalerRef"), "spec.autoscalerRef",
              "on promotion the primary keeps the replicas its HPA gave it (Flagger resets to the HPA minimum, #1600)")
    if _scalar(_get(spec, "skipAnalysis")) is True:
        r.add("differs", _get(spec, "skipAnalysis"), "spec.skipAnalysis",
              "the initialization still waits for the primary to be ready before traffic moves")
    deadline = _get(spec, "progressDeadlineSeconds")
    r.add("differs", deadline or spec, "spec.progressDeadlineSeconds",
          "bounds every wait for readiness, measured from status.waitingSince; a Deployment's own "
          "ProgressDeadlineExceeded fails at once, and a canary that never becomes ready is alerted")
    analysis = _get(spec, "analysis")
    if analysis is None:
        return
    interval = _get(analysis, "interval")
    seconds = _duration_seconds(_scalar(interval)) if interval is not None else None
    if seconds is not None and seconds < 10:
        r.add("differs", interval, "spec.analysis.interval",
              f"{_scalar(interval)} is honoured here (Flagger clamps intervals to 10s)")
    threshold = _get(analysis, "threshold")
    if threshold is not None:
        r.add("differs", threshold, "spec.analysis.threshold",
              "the rollback happens in the step whose failure reaches the threshold, interval*(threshold-1) "
              "after the first failing step (Flagger: one interval later); failedChecks and lastFailure stay in "
              "the status after the rollback")
    max_w, step = _scalar(_get(analysis, "maxWeight")), _scalar(_get(analysis, "stepWeight"))
    if isinstance(max_w, int) and isinstance(step, int) and step > 0 and max_w % step:
        r.add("differs", _get(analysis, "stepWeight"), "spec.analysis.stepWeight",
              f"the last step is clamped to maxWeight {max_w} (Flagger overshoots to {max_w - max_w % step + step})")
    if _get(analysis, "stepWeightPromotion") is not None and _scalar(_get(analysis, "iterations")) is not None \
            and _get(analysis, "match") is not None:
        r.add("differs", _get(analysis, "stepWeightPromotion"), "spec.analysis.stepWeightPromotion",
              "A/B testing switches back to the primary at once; stepWeightPromotion paces canary and Blue/Green only")
    for hook in _items(_get(analysis, "webhooks")):
        kind = _scalar(_get(hook, "type")) or "rollout"
        name = _scalar(_get(hook, "name"))
        if kind in ("confirm-rollout", "confirm-promotion", "confirm-traffic-increase"):
            r.add("differs", hook, f"spec.analysis.webhooks[{name}]",
                  f"{kind}: the gate is asked at most once per interval while waiting and its alert is sent once, "
                  "on entering the wait (Flagger repeats it every tick)")
        elif kind == "rollback":
            r.add("differs", hook, f"spec.analysis.webhooks[{name}]",
                  "rollback: also asked while waiting for the canary to become ready (Flagger #1268)")
    for alert in _items(_get(analysis, "alerts")):
        severity = _get(alert, "severity")
        if not _scalar(severity):
            r.add("differs", alert, f"spec.analysis.alerts[{_scalar(_get(alert, 'name'))}]",
                  "no severity means info: this entry receives every alert here (Flagger sends it none)")
    for metric in _items(_get(analysis, "metrics")):
        if _get(metric, "templateRef") is not None and _get(metric, "interval") is None:
            r.add("differs", metric, f"spec.analysis.metrics[{_scalar(_get(metric, 'name'))}]",
                  "no interval: {{ interval }} renders as 1m here (Flagger renders it empty)")


def _metric_template(spec: yaml.Node | None, r: _Report) -> None:
    node = _at(spec, "provider", "type")
    value = _scalar(node)
    if value and value != "prometheus":
        r.add("error", node, "spec.provider.type",
              f"{value!r} is not implemented here (only prometheus): checks using this template fail")


def _alert_provider(spec: yaml.Node | None, r: _Report) -> None:
    if _get(spec, "username") is None and _scalar(_get(spec, "type")) in ("slack", "discord", "rocket"):
        r.add("differs", spec, "spec.username", "the default username is canary-operator (Flagger: flagger)")
    r.add("differs", spec, "spec", "messages are escaped for the receiver's markup, carry the cluster name, the "
          "images, the weight and the deciding check, and are retried on 5xx (docs/alerts.md)")


CHECKS = {"Canary": _canary, "MetricTemplate": _metric_template, "AlertProvider": _alert_provider}


# ---- the rewrite ----------------------------------------------------------------------------------


def _documents(text: str) -> Iterator[yaml.Node | None]:
    yield from yaml.compose_all(text, Loader=yaml.SafeLoader)


def migrate_text(text: str, path: str = "<stdin>") -> Result:
    """The migrated text of one file and what to know about it. Raises yaml.YAMLError."""
    splices: list[tuple[int, int, str]] = []
    findings: list[Finding] = []
    for doc in _documents(text):
        if not isinstance(doc, yaml.MappingNode):
            continue
        api = _get(doc, "apiVersion")
        kind = _scalar(_get(doc, "kind"))
        name = _scalar(_at(doc, "metadata", "name")) or "?"
        if kind not in KINDS or not isinstance(api, yaml.ScalarNode) or api.value not in (FLAGGER, OURS):
            continue
        r = _Report(path, kind, name)
        if api.value == FLAGGER:
            start, end = api.start_mark.index, api.end_mark.index
            raw = text[start:end]
            splices.append((start, end, raw.replace(FLAGGER, OURS)))
            r.add("changed", api, "apiVersion", f"{FLAGGER} -> {OURS}")
        CHECKS[kind](_get(doc, "spec"), r)
        findings.extend(r.findings)
    out = text
    for start, end, new in sorted(splices, reverse=True):
        out = out[:start] + new + out[end:]
    return Result(path, out, bool(splices), findings)


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            yield p


def migrate_paths(paths: Iterable[str]) -> list[Result]:
    results = []
    for f in _files(paths):
        results.append(migrate_text(f.read_text(), str(f)))
    return results


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="canary migrate")
    p.description = "Rewrite Flagger manifests (Canary, MetricTemplate, AlertProvider) to canary.dev/v1beta1."
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="manifests; directories are searched for *.yaml")
    p.add_argument("-w", "--write", action="store_true", help="rewrite the files in place (default: only report)")
    p.add_argument("--stdout", action="store_true", help="print the migrated manifests instead")
    p.add_argument("-q", "--quiet", action="store_true", help="report only errors and changes, not differences")
    return p


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """0: done; 1: a manifest uses something this operator does not implement; 2: unreadable input."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        results = migrate_paths(args.paths)
    except (OSError, yaml.YAMLError) as exc:
        print(f"canary migrate: {exc}", file=err)
        return 2
    report = out if not args.stdout else err
    errors = 0
    for res in results:
        if args.stdout:
            out.write(res.text if res.text.endswith("\n") or not res.text else res.text + "\n")
        elif args.write and res.changed:
            Path(res.path).write_text(res.text)
        for f in res.findings:
            errors += f.severity == "error"
            if args.quiet and f.severity == "differs":
                continue
            print(f.render(), file=report)
    changed = sum(r.changed for r in results)
    verb = "rewrote" if args.write else "would rewrite"
    print(f"{verb} {changed} of {len(results)} file(s); {errors} error(s)"
          + ("" if args.write or args.stdout or not changed else " (run with --write to rewrite them)"), file=report)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
