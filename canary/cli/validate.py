"""`canary validate`: manifests checked as the operator will read them, so that a pull request
can rely on it: the same pydantic models (canary.models), then what the operator refuses or
ignores at runtime (canary.cli.rules), references between the documents given (or in the
cluster with --cluster), and with --prometheus every metric query run now.

Each finding has the file, the line, the path of the field and a plain sentence; output as
text, JSON or GitHub workflow annotations (`::error file=F,line=N::message`)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from canary.cli.api import EXIT_FAILED, EXIT_OK, Ctx
from canary.cli.files import Doc, expand, read_docs
from canary.cli.rules import Finding, canary_rules, refs_missing, template_rules, unknown_fields
from canary.models import AlertProvider, Canary, MetricTemplate

KINDS: dict[str, Any] = {"Canary": Canary, "MetricTemplate": MetricTemplate, "AlertProvider": AlertProvider}
API_VERSION = "canary.dev/v1beta1"


@dataclass
class Result:
    file: str
    line: int
    severity: str  # error | warning | info
    kind: str
    name: str
    path: str
    message: str

    def text(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.file}:{self.line}: {self.severity}: {self.kind} {self.name}:{where} {self.message}"

    def github(self) -> str:
        level = {"error": "error", "warning": "warning"}.get(self.severity, "notice")
        title = f"{self.kind} {self.name}" + (f" {self.path}" if self.path else "")
        message = self.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        prop = lambda v: v.replace("%", "%25").replace(",", "%2C").replace(":", "%3A")  # noqa: E731
        return f"::{level} file={prop(self.file)},line={self.line},title={prop(title)}::{message}"


def dotted(loc: tuple[Any, ...] | list[Any], data: Any) -> list[Any]:
    """The parts of a pydantic error location that are in the data (union tags dropped)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            out.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(part)
        elif isinstance(part, str) and not any(c in part for c in "[](),"):
            out.append(part)  # a missing field
            node = None
    return out


def show_path(parts: list[Any]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def line_of(doc: Doc, parts: list[Any]) -> int:
    for n in range(len(parts), 0, -1):
        key = ".".join(str(p) for p in parts[:n])
        if key in doc.lines:
            return doc.lines[key]
    return doc.line


def _plain(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def model_findings(model: Any, data: dict[str, Any]) -> tuple[Any, list[Finding]]:
    try:
        return model.model_validate(data), []
    except ValidationError as e:
        out = []
        for err in e.errors():
            parts = dotted(tuple(err["loc"]), data)
            message = _plain(str(err["msg"]))
            if err["type"] == "missing":
                message = "is required"
            elif err["type"] == "literal_error":
                value = err.get("input")
                message = f"{value!r} is not accepted: {message[0].lower() + message[1:]}"
            out.append(Finding("error", parts, message))
        return None, out


def check_doc(doc: Doc, kind: str, data: dict[str, Any]) -> tuple[Any, list[Finding]]:
    found: list[Finding] = []
    api_version = data.get("apiVersion")
    if api_version == "flagger.app/v1beta1":
        found.append(Finding("error", ["apiVersion"], f"flagger.app/v1beta1 is Flagger's API; this operator watches "
                             f"{API_VERSION} (same fields): set apiVersion: {API_VERSION}"))
    elif api_version != API_VERSION:
        found.append(Finding("error", ["apiVersion"], f"{api_version!r} is not served by this operator: use "
                             f"apiVersion: {API_VERSION}"))
    obj, errors = model_findings(KINDS[kind], data)
    found += errors
    found += unknown_fields(KINDS[kind], data)
    if obj is not None and kind == "Canary":
        found += canary_rules(obj, data)
    if obj is not None and kind == "MetricTemplate":
        found += template_rules(obj)
    return obj, found


def cmd_validate(args: argparse.Namespace, ctx: Ctx) -> int:
    results: list[Result] = []
    canaries: list[tuple[Doc, Canary]] = []
    templates: dict[tuple[str, str], MetricTemplate] = {}
    providers: set[tuple[str, str]] = set()
    files = expand(args.files)
    any_canary = False
    for file in files:
        kinds_in_file = []
        for doc in read_docs(file):
            data = doc.data
            if not isinstance(data, dict) or data.get("kind") not in KINDS:
                continue
            kind = str(data["kind"])
            kinds_in_file.append(kind)
            meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
            name = str(meta.get("name") or "?")
            namespace = str(meta.get("namespace") or getattr(args, "namespace", None) or "default")
            data = {**data, "metadata": {**meta, "namespace": namespace}}
            obj, found = check_doc(doc, kind, data)
            for f in found:
                results.append(Result(doc.file, line_of(doc, f.path), f.severity, kind, name, show_path(f.path),
                                      f.message))
            if obj is None:
                continue
            if kind == "Canary":
                canaries.append((doc, obj))
                any_canary = True
            elif kind == "MetricTemplate":
                templates[(namespace, name)] = obj
            else:
                providers.add((namespace, name))
        if "Canary" not in kinds_in_file:
            label = "<stdin>" if file == "-" else file
            if kinds_in_file:
                results.append(Result(label, 1, "info", "File", label, "", f"no Canary found (only "
                                      f"{', '.join(sorted(set(kinds_in_file)))})"))
            else:
                results.append(Result(label, 1, "warning", "File", label, "", "no Canary found (no document with "
                                      "kind Canary, MetricTemplate or AlertProvider)"))
    lookup = None
    if args.cluster:
        from canary.cli.cluster import ClusterRefs

        lookup = ClusterRefs(ctx)
    for doc, canary in canaries:
        for f in refs_missing(canary, templates, providers, lookup):
            results.append(Result(doc.file, line_of(doc, f.path), f.severity, "Canary", canary.name,
                                  show_path(f.path), f.message))
    if args.prometheus:
        from canary.cli.queries import run_queries

        for doc, canary in canaries:
            for f in asyncio.run(run_queries(canary, args.prometheus, templates, lookup)):
                results.append(Result(doc.file, line_of(doc, f.path), f.severity, "Canary", canary.name,
                                      show_path(f.path), f.message))
    order = {f: i for i, f in enumerate(dict.fromkeys(r.file for r in results))}
    results.sort(key=lambda r: (order[r.file], r.line))
    errors = sum(1 for r in results if r.severity == "error")
    warnings = sum(1 for r in results if r.severity == "warning")
    failed = errors > 0 or not any_canary or (args.strict and warnings > 0)
    if args.output == "json":
        ctx.print(json.dumps({"ok": not failed, "errors": errors, "warnings": warnings,
                              "canaries": [f"{c.namespace}/{c.name}" for _, c in canaries],
                              "findings": [asdict(r) for r in results]}, indent=2))
    elif args.output == "github":
        for r in results:
            if r.severity != "info":
                ctx.print(r.github())
        if not any_canary:
            ctx.print("::error::no Canary found in " + ", ".join(files))
    else:
        for r in results:
            ctx.print(r.text())
        for doc, canary in canaries:
            if not any(r.file == doc.file and r.name == canary.name and r.severity == "error" for r in results):
                ctx.print(f"{doc.file}:{doc.line}: Canary {canary.name}: ok")
        if not any_canary:
            ctx.print("no Canary found in " + ", ".join(files))
        ctx.print(f"{errors} error(s), {warnings} warning(s)")
    return EXIT_FAILED if failed else EXIT_OK
