"""The `canary` command (also installed as the kubectl plugin `kubectl-canary`).

    canary operator ...                      run the operator
    canary validate FILES                    check Canary manifests offline
    canary get|status [NAME] [-n NS|-A]      one line per Canary (--watch, --wait)
    canary explain NAME [-o json]            the decision ledger as a timeline
    canary promote|abort|retry|pause|resume NAME [--reason R]
    canary set-weight NAME N                 commands, as annotations the operator consumes

Exit codes: 0 ok (or Succeeded), 1 Failed / command refused or rejected, 2 timeout,
3 error (no cluster, unknown Canary, bad kubeconfig). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

import yaml

PHASE_ORDER = ("Succeeded", "Failed")
GROUP, VERSION, PLURAL = "canary.dev", "v1beta1", "canaries"

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT, EXIT_ERROR = 0, 1, 2, 3
FINAL_PHASES = ("Succeeded", "Failed")
RUN_PHASES = ("Waiting", "Progressing", "WaitingPromotion")
COMMANDS = ("promote", "abort", "retry", "pause", "resume", "set-weight")


class CliError(Exception):
    """A problem to report in one line (exit code 3)."""


class NotFound(CliError):
    pass


def _setup_logging(level: str, fmt: str) -> None:
    if fmt == "json":
        logging.basicConfig(level=level.upper(), format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}')
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


# ---- the cluster, behind a small interface (a fake one in tests/unit/test_cli.py) ------------


class Api(Protocol):
    namespace: str  # the kubeconfig context's namespace (default: "default")
    user: str  # the kubeconfig context's user name ("" if unknown)

    def get_canary(self, namespace: str, name: str) -> dict: ...  # raises NotFound

    def list_canaries(self, namespace: str | None) -> list[dict]: ...  # None: all namespaces

    def get_deployment(self, namespace: str, name: str) -> dict | None: ...

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> dict: ...


class KubeApi:
    """Api on the official client: kubeconfig (or $KUBECONFIG, or in-cluster) credentials."""

    def __init__(self, kubeconfig: str | None = None):
        import urllib3
        from kubernetes import client, config

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        cfg = client.Configuration()
        self.namespace, self.user = "default", ""
        try:
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)
            context = (current or {}).get("context") or {}
            self.namespace = context.get("namespace") or "default"
            self.user = context.get("user") or ""
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        except (config.ConfigException, OSError) as e:
            if kubeconfig:
                raise CliError(f"cannot use the kubeconfig {kubeconfig}: {e}") from None
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                raise CliError(f"no cluster configured: no kubeconfig found (set --kubeconfig or $KUBECONFIG): {e}") from None
        cfg.retries = 1
        self.server = cfg.host
        self._client = client.ApiClient(cfg)
        self._custom = client.CustomObjectsApi(self._client)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as e:
            if e.status == 404:
                raise NotFound(what) from None
            try:
                message = json.loads(e.body or "{}").get("message") or e.reason
            except ValueError:
                message = e.reason
            raise CliError(f"{what}: {message} (HTTP {e.status})") from None
        except HTTPError as e:
            reason = getattr(e, "reason", None) or e
            raise CliError(f"cannot reach the Kubernetes API server at {self.server}: {reason}") from None

    def get_canary(self, namespace: str, name: str) -> dict:
        return self._call(f'canary "{name}" not found in namespace "{namespace}"', lambda: self._custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=15))

    def list_canaries(self, namespace: str | None) -> list[dict]:
        if namespace is None:
            out = self._call("listing canaries", lambda: self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=15))
        else:
            out = self._call(f'listing canaries in namespace "{namespace}"', lambda: self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=15))
        return list(out.get("items") or [])

    def get_deployment(self, namespace: str, name: str) -> dict | None:
        from kubernetes import client

        def read():
            # the raw JSON, as the operator hashes it (not the client's model of it)
            resp = client.AppsV1Api(self._client).read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=15)
            return json.loads(resp.data)

        try:
            return self._call(f"deployment {name}", read)
        except NotFound:
            return None

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> dict:
        body = {"metadata": {"annotations": annotations}}
        return self._call(f'canary "{name}" not found in namespace "{namespace}"', lambda: self._custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body, _request_timeout=15))


@dataclass
class Ctx:
    """What every subcommand gets: the API (made on first use), output streams and the clock."""

    api_factory: Callable[[], Api]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    _api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = self.api_factory()
        return self._api

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)


# ---- reading a Canary --------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _analysis(obj: dict) -> dict:
    return ((obj.get("spec") or {}).get("analysis")) or {}


def max_weight(obj: dict) -> int:
    analysis = _analysis(obj)
    if analysis.get("stepWeights"):
        return min(100, int(analysis["stepWeights"][-1]))
    return int(analysis.get("maxWeight") or 100) if analysis.get("maxWeight") else 100


def threshold(obj: dict) -> int:
    value = _analysis(obj).get("threshold")
    return int(value) if value and int(value) > 0 else 1


def strategy(obj: dict) -> str:
    analysis = _analysis(obj)
    if (analysis.get("iterations") or 0) > 0:
        return "ab" if analysis.get("match") else "bluegreen"
    return "canary"


def last_checks(status: dict) -> list[dict]:
    for entry in reversed(status.get("ledger") or []):
        if entry.get("checks"):
            return entry["checks"]
    return []


def format_check(check: dict) -> str:
    bounds = []
    if check.get("min") is not None:
        bounds.append(f"min {_num(check['min'])}")
    if check.get("max") is not None:
        bounds.append(f"max {_num(check['max'])}")
    value = check.get("value")
    text = f"{check.get('name')} {_num(value) if value is not None else 'no value'}"
    if bounds:
        text += f" ({', '.join(bounds)})"
    text += " ok" if check.get("ok") else " FAILED"
    if check.get("message") and not check.get("ok"):
        text += f": {_cut(check['message'], 100)}"
    return text


def short_checks(status: dict) -> str:
    checks = last_checks(status)
    if not checks:
        return "-"
    return ", ".join(f"{c.get('name')}={_num(c.get('value'))}{'' if c.get('ok') else '!'}" for c in checks)


def note(obj: dict) -> str:
    """The most useful short message about a Canary's state."""
    status = obj.get("status") or {}
    paused = status.get("paused")
    if paused:
        who = f" by {paused['by']}" if paused.get("by") else ""
        why = f": {paused['reason']}" if paused.get("reason") else ""
        return f"paused{who}{why}"
    phase = status.get("phase") or ""
    failure = status.get("lastFailure") or {}
    if phase == "Failed" and failure:
        return _cut(failure.get("message") or "", 120)
    stalled = next((c for c in status.get("conditions") or [] if c.get("type") == "Stalled" and c.get("status") == "True"), None)
    if stalled:
        return _cut(stalled.get("message") or "", 120)
    ledger = status.get("ledger") or []
    if ledger:
        last = ledger[-1]
        text = last.get("action", "")
        if last.get("message"):
            text += f": {last['message']}"
        return _cut(text, 120)
    return ""


def status_row(obj: dict, now: datetime, with_age: bool = True) -> list[str]:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    phase = status.get("phase") or "-"
    if status.get("paused"):
        phase += " (paused)"
    row = [
        meta.get("namespace", ""),
        meta.get("name", ""),
        phase,
        f"{status.get('canaryWeight', 0)}/{max_weight(obj)}",
        f"{status.get('failedChecks', 0)}/{threshold(obj)}",
        short_checks(status),
    ]
    if with_age:
        row.append(_ago(_parse_time(meta.get("creationTimestamp")), now))
    row.append(note(obj))
    return row


STATUS_HEADER = ["NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILED", "CHECKS", "AGE", "MESSAGE"]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [str(c).ljust(widths[i]) if i < len(header) - 1 else str(c) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _revision_of(deployment: dict | None) -> str | None:
    if deployment is None:
        return None
    from canary.revision import template_hash

    return template_hash(((deployment.get("spec") or {}).get("template")) or {})


def outcome(obj: dict, deployment: dict | None) -> int | None:
    """EXIT_OK / EXIT_FAILED once the current release is decided; None while it is not.

    Decided: the phase is Succeeded or Failed (or Initialized with nothing to release), the
    operator has seen the target's current revision, and no command is pending (pause aside).
    """
    status = obj.get("status") or {}
    phase = status.get("phase") or ""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if any(f"canary.dev/{c}" in annotations for c in COMMANDS if c != "pause"):
        return None
    if status.get("paused") or "canary.dev/pause" in annotations:
        return None
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration") not in (None, generation):
        return None
    revision = _revision_of(deployment)
    if revision is not None and not status.get("trackedConfigs"):
        # tracked configs fold into the revision; without them it is the template hash
        if status.get("lastAppliedSpec") and revision != status.get("lastAppliedSpec"):
            return None  # the operator has not picked up the new revision yet
    if phase == "Succeeded":
        return EXIT_OK
    if phase == "Failed":
        return EXIT_FAILED
    if phase == "Initialized" and (revision is None or revision == status.get("lastPromotedSpec")):
        return EXIT_OK
    return None


# ---- errors ----------------------------------------------------------------------------------


def _namespace(ctx: Ctx, args) -> str:
    return args.namespace or ctx.api.namespace or "default"


def get_canary(ctx: Ctx, namespace: str, name: str) -> dict:
    """The Canary, or a clear error that also says where a Canary of that name does exist."""
    try:
        return ctx.api.get_canary(namespace, name)
    except NotFound:
        pass
    elsewhere: list[str] = []
    try:
        elsewhere = sorted((c.get("metadata") or {}).get("namespace", "") for c in ctx.api.list_canaries(None)
                           if (c.get("metadata") or {}).get("name") == name)
    except CliError:
        pass
    message = f'canary "{name}" not found in namespace "{namespace}"'
    if len(elsewhere) == 1:
        message += f"; it exists in namespace {elsewhere[0]} (use -n {elsewhere[0]})"
    elif elsewhere:
        shown = ", ".join(elsewhere[:5]) + (", ..." if len(elsewhere) > 5 else "")
        message += f"; it exists in namespaces {shown} (use -n NAMESPACE)"
    raise NotFound(message)


# ---- status / get ------------------------------------------------------------------------------


def cmd_status(args, ctx: Ctx) -> int:
    if args.wait and not args.name:
        raise CliError("--wait needs a NAME")
    namespace = None if args.all_namespaces else _namespace(ctx, args)

    def fetch() -> list[dict]:
        if args.name:
            return [get_canary(ctx, namespace or ctx.api.namespace, args.name)]
        return sorted(ctx.api.list_canaries(namespace),
                      key=lambda o: ((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", "")))

    deadline = ctx.monotonic() + args.timeout if args.timeout else None
    seen: dict[tuple[str, str], list[str]] = {}
    first = True
    while True:
        items = fetch()
        now = ctx.clock()
        if args.output == "json" and not (args.watch or args.wait):
            ctx.print(json.dumps(items[0] if args.name else items, indent=2))
            return EXIT_OK
        if args.watch:
            for obj in items:
                meta = obj.get("metadata") or {}
                key = (meta.get("namespace", ""), meta.get("name", ""))
                row = status_row(obj, now, with_age=False)
                if seen.get(key) != row:
                    seen[key] = row
                    ns = f"{row[0]}/" if args.all_namespaces or not args.name else ""
                    ctx.print(f"{now.strftime('%H:%M:%S')}  {ns}{row[1]}  {row[2]}  weight {row[3]}  "
                              f"failed {row[4]}  {row[5]}  {row[6]}".rstrip())
        elif first and not args.wait:
            header = STATUS_HEADER if args.all_namespaces else STATUS_HEADER[1:]
            rows = [status_row(o, now) if args.all_namespaces else status_row(o, now)[1:] for o in items]
            if not rows:
                where = "any namespace" if args.all_namespaces else f'namespace "{namespace}"'
                ctx.print(f"No canaries found in {where}.")
            else:
                ctx.print(table(rows, header))
        first = False
        if args.wait:
            obj = items[0]
            meta = obj.get("metadata") or {}
            target = ((obj.get("spec") or {}).get("targetRef") or {}).get("name", "")
            result = outcome(obj, ctx.api.get_deployment(meta.get("namespace", ""), target))
            if result is not None:
                if not args.watch:
                    row = status_row(obj, now)
                    ctx.print(f"{row[1]}: {row[2]} (weight {row[3]}, failed checks {row[4]}) {row[7]}".rstrip())
                return result
        elif not args.watch:
            return EXIT_OK
        if deadline is not None and ctx.monotonic() >= deadline:
            if not args.wait:
                return EXIT_OK
            ctx.print(f"timed out after {args.timeout:g}s; {args.name} is {status_row(items[0], now)[2]}")
            return EXIT_TIMEOUT
        ctx.sleep(args.interval)


# ---- explain -------------------------------------------------------------------------------------


def _hhmmss(value: Any) -> str:
    t = _parse_time(value)
    return t.strftime("%H:%M:%S") if t else "-"


def _entry_line(entry: dict) -> str:
    action = entry.get("action", "")
    if (entry.get("count") or 1) > 1:
        action += f" x{entry['count']} until {_hhmmss(entry.get('lastTime'))}"
    message = entry.get("message")
    return f"{action}: {_cut(message, 160)}" if message else action


def _deciding(status: dict) -> dict | None:
    """The ledger entry that decided the current phase."""
    phase = status.get("phase")
    decisive = {
        "Failed": ("rollback", "command: abort", "fail"),
        "Succeeded": ("promote", "command: promote", "cancel"),
        "Promoting": ("promote", "command: promote"),
        "Finalising": ("promote", "command: promote"),
    }.get(phase or "")
    if not decisive:
        return None
    for entry in reversed(status.get("ledger") or []):
        if entry.get("action", "").startswith(decisive):
            return entry
    return None


EXPLAIN_ENTRIES = 20
"""Entries `canary explain` shows by default (--all: the whole ledger)."""


def explain_text(obj: dict, show_queries: bool = False, show_all: bool = False) -> str:
    from canary.ledger import queries as resolve
    from canary.models import LedgerEntry

    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    phase = status.get("phase") or "-"
    lines = [f"Canary {meta.get('namespace')}/{meta.get('name')}: {phase}, weight {status.get('canaryWeight', 0)}"
             f"/{max_weight(obj)}, failed checks {status.get('failedChecks', 0)}/{threshold(obj)}, "
             f"revision {status.get('lastAppliedSpec') or '-'} (promoted: {status.get('lastPromotedSpec') or '-'})"]
    deciding = _deciding(status)
    failure = status.get("lastFailure") or {}
    if phase == "Failed":
        who = f" by {deciding['actor']}" if deciding else ""
        when = f" at {_hhmmss(deciding['time'])}" if deciding else ""
        value = f" (value {_num(failure.get('value'))})" if failure.get("value") is not None else ""
        lines.append(f"Why: rolled back{when}{who}: check {failure.get('check', '?')}{value}: "
                     f"{failure.get('message', '')}")
    elif phase in ("Succeeded", "Promoting", "Finalising") and deciding is not None:
        verb = "cancelled" if deciding.get("action") == "cancel" else "promoted"
        checks = "; ".join(format_check(c) for c in deciding.get("checks") or []) or "-"
        lines.append(f"Why: {verb} at {_hhmmss(deciding['time'])} by {deciding['actor']}: "
                     f"{deciding.get('message', '')} (checks: {checks})")
    elif status.get("paused"):
        lines.append(f"Why: {note(obj)} since {_hhmmss(status['paused'].get('since'))}")
    else:
        lines.append(f"Now: {note(obj) or '-'}")
    last_command = status.get("lastCommand")
    if last_command:
        lines.append(f"Last command: {last_command.get('name')} by {last_command.get('by') or 'unknown'} at "
                     f"{_hhmmss(last_command.get('time'))}: {last_command.get('result')}"
                     f"{': ' + last_command['message'] if last_command.get('message') else ''}")
    ledger = status.get("ledger") or []
    summary = status.get("ledgerSummary")
    lines.append("")
    if summary:
        lines.append(f"({summary['entries']} earlier entries since {summary['firstTime']}: {summary['advances']} advances, "
                     f"{summary['halts']} halts, {summary['rollbacks']} rollbacks, {summary['promotions']} promotions, "
                     f"{summary['commands']} commands)")
    if not ledger:
        lines.append("No decisions recorded yet.")
        return "\n".join(lines)
    try:
        resolved = resolve([LedgerEntry.model_validate(e) for e in ledger])
    except Exception:  # a foreign status: show what is there
        resolved = [{} for _ in ledger]
    rows = []
    pairs = list(zip(ledger, resolved))
    hidden = 0 if show_all else max(0, len(pairs) - EXPLAIN_ENTRIES)
    if hidden:
        lines.append(f"({hidden} older entries not shown; --all shows them)")
    for entry, queries in pairs[hidden:]:
        rows.append((entry, [_hhmmss(entry.get("time")), entry.get("phase") or "-", str(entry.get("weight", 0)),
                             entry.get("actor", ""), _entry_line(entry)], queries))
    header = ["TIME (UTC)", "PHASE", "WEIGHT", "ACTOR", "DECISION"]
    widths = [max(len(r[1][i]) for r in rows + [(None, header, None)]) for i in range(4)]
    indent = " " * (sum(widths) + 2 * 4)

    def fmt(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2].rjust(widths[2]),
                          cells[3].ljust(widths[3]), cells[4]]).rstrip()

    lines.append(fmt(header))
    for entry, cells, queries in rows:
        checks = entry.get("checks") or []
        detailed = show_queries or entry is deciding or not all(c.get("ok") for c in checks)
        if checks and not detailed:
            # all passed: the values inline, one line per decision
            cells = cells[:4] + [cells[4] + " [" + ", ".join(
                f"{c.get('name')} {_num(c.get('value'))}" for c in checks) + " ok]"]
        lines.append(fmt(cells))
        for check in checks if detailed else []:
            lines.append(indent + "check " + format_check(check))
            if show_queries and check.get("name") in queries:
                lines.append(indent + "  query: " + queries[check["name"]])
        for hook in entry.get("webhooks") or []:
            code = f"HTTP {hook['statusCode']}" if hook.get("statusCode") is not None else "no answer"
            verdict = "ok" if hook.get("ok") else "FAILED"
            if hook.get("type") == "rollback" and hook.get("ok"):
                verdict = "rollback requested"
            extra = f": {hook['message']}" if hook.get("message") else ""
            lines.append(indent + f"webhook {hook.get('name')} ({hook.get('type')}) {code} {verdict}{extra}")
    return "\n".join(lines)


def explain_json(obj: dict) -> dict:
    from canary.ledger import queries as resolve
    from canary.models import LedgerEntry

    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ledger = [dict(e) for e in status.get("ledger") or []]
    try:
        resolved = resolve([LedgerEntry.model_validate(e) for e in ledger])
        for entry, queries in zip(ledger, resolved):
            entry["checks"] = [{**c, "query": queries.get(c.get("name"), c.get("query"))} for c in entry.get("checks") or []] or None
            if entry["checks"] is None:
                del entry["checks"]
    except Exception:
        pass
    deciding = _deciding({**status, "ledger": ledger})  # with its queries resolved
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "phase": status.get("phase"),
        "canaryWeight": status.get("canaryWeight", 0),
        "maxWeight": max_weight(obj),
        "failedChecks": status.get("failedChecks", 0),
        "threshold": threshold(obj),
        "lastAppliedSpec": status.get("lastAppliedSpec"),
        "lastPromotedSpec": status.get("lastPromotedSpec"),
        "lastFailure": status.get("lastFailure"),
        "decidedBy": deciding,
        "paused": status.get("paused"),
        "lastCommand": status.get("lastCommand"),
        "ledgerSummary": status.get("ledgerSummary"),
        "ledger": ledger,
    }


def cmd_explain(args, ctx: Ctx) -> int:
    obj = get_canary(ctx, _namespace(ctx, args), args.name)
    if args.output == "json":
        ctx.print(json.dumps(explain_json(obj), indent=2))
    else:
        ctx.print(explain_text(obj, show_queries=args.queries, show_all=args.all))
    return EXIT_OK


# ---- commands ------------------------------------------------------------------------------------


def who(args, ctx: Ctx) -> str:
    if getattr(args, "by", None):
        return args.by
    return ctx.api.user or os.environ.get("USER") or os.environ.get("USERNAME") or ""


def precheck(command: str, obj: dict, weight: int | None = None) -> tuple[bool, str]:
    """(will the operator accept it, what it will do or why not) from the current status.

    The operator decides for real; this only spares a command that would be rejected."""
    status = obj.get("status") or {}
    phase = status.get("phase") or ""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    paused = bool(status.get("paused")) or "canary.dev/pause" in annotations
    current = status.get("canaryWeight", 0)
    show = phase or "not initialized"
    if command == "promote":
        if paused:
            return False, "the canary is paused; resume it first"
        if phase in RUN_PHASES:
            return True, ("the operator skips the remaining analysis, gates and steps and promotes the "
                          "canary as soon as it is ready")
        return False, f"no analysis is running ({show}); there is nothing to promote"
    if command == "abort":
        if phase in RUN_PHASES:
            return True, ("the operator routes all traffic back to the primary, scales the canary to zero and "
                          "marks the canary Failed with your reason")
        return False, f"no analysis is running ({show}); there is nothing to abort"
    if command == "retry":
        if phase != "Failed":
            return False, f"retry applies to a Failed canary; it is {show}"
        if paused:
            return False, "the canary is paused; resume it first"
        return True, f"the operator runs revision {status.get('lastAppliedSpec') or '?'} again from the start"
    if command == "pause":
        if paused:
            return False, "the canary is already paused"
        return True, (f"the operator holds the canary at weight {current}: no analysis steps, no new runs and no "
                      "deadline counting until `canary resume`")
    if command == "resume":
        if not paused:
            return False, "the canary is not paused"
        return True, "the operator continues where it stopped; the paused time does not count toward deadlines"
    if command == "set-weight":
        top = max_weight(obj)
        if phase not in ("Progressing", "WaitingPromotion"):
            return False, f"the weight can only be set during the analysis; the canary is {show}"
        if strategy(obj) != "canary":
            return False, f"{strategy(obj)} routes all or nothing; set-weight needs the canary strategy"
        if weight is None or not 0 <= weight <= top:
            return False, f"weight {weight} is outside [0, {top}] (maxWeight)"
        return True, (f"the operator routes {weight}% to the canary (now {current}%); the analysis continues "
                      f"from {weight} one interval later")
    raise ValueError(command)


def cmd_command(args, ctx: Ctx) -> int:
    from canary import commands

    command = args.cmd
    namespace = _namespace(ctx, args)
    obj = get_canary(ctx, namespace, args.name)
    weight = getattr(args, "weight", None)
    accepted, text = precheck(command, obj, weight)
    label = f"{namespace}/{args.name}"
    if not accepted and not args.force:
        print(f"error: {command} {label}: {text} (--force sends it anyway)", file=ctx.err, flush=True)
        return EXIT_FAILED
    by = who(args, ctx)
    value = commands.encode(by, reason=args.reason or "", at=ctx.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z"), weight=weight)
    annotations: dict[str, str | None] = {commands.annotation(command): value}
    if command == "resume":
        annotations[commands.annotation("pause")] = None
    ctx.api.annotate(namespace, args.name, annotations)
    cid = commands.command_id(command, value)
    ctx.print(f"{commands.annotation(command)} set on {label} (by {by or 'unknown'}, id {cid}): {text}.")
    if not accepted:
        ctx.print(f"warning: the operator will probably reject it: {text}")
    if not args.wait:
        return EXIT_OK
    return wait_for_command(ctx, namespace, args.name, command, cid, args.timeout)


def wait_for_command(ctx: Ctx, namespace: str, name: str, command: str, cid: str, timeout: float) -> int:
    deadline = ctx.monotonic() + timeout
    while True:
        obj = get_canary(ctx, namespace, name)
        last = (obj.get("status") or {}).get("lastCommand") or {}
        if last.get("id") == cid:
            ctx.print(f"{last.get('result', '?').lower()}: {last.get('message') or ''}".rstrip(": "))
            return EXIT_OK if last.get("result") == "Applied" else EXIT_FAILED
        if ctx.monotonic() >= deadline:
            ctx.print(f"timed out after {timeout:g}s waiting for the operator to decide the {command}")
            return EXIT_TIMEOUT
        ctx.sleep(1.0)


# ---- offline commands ----------------------------------------------------------------------------


def cmd_operator(args, ctx: Ctx | None = None) -> int:
    from canary.operator import Options, main

    _setup_logging(args.log_level, args.log_format)
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
            leader_election=args.leader_election,
            leader_election_namespace=args.leader_election_namespace,
            leader_election_id=args.leader_election_id,
            shutdown_timeout=args.shutdown_timeout,
            liveness=args.liveness,
            alert_webhook=args.alert_webhook,
        )
    )
    return 0


def cmd_simulate(args, ctx: Ctx | None = None) -> int:
    """Decide a release offline with the real engine and a virtual clock."""
    from pydantic import ValidationError

    from canary.models import Canary
    from canary.simulate import render, simulate

    docs = [d for d in yaml.safe_load_all(Path(args.canary).read_text()) if d and d.get("kind") == "Canary"]
    if not docs:
        print(f"{args.canary}: no Canary in the file", file=sys.stderr)
        return 3
    doc = docs[0]
    doc.setdefault("metadata", {}).setdefault("namespace", "default")
    try:
        canary = Canary.from_obj(doc)
    except ValidationError as e:
        print(f"{args.canary}: invalid Canary: {e.errors()[0]['msg']}", file=sys.stderr)
        return 3
    scenario = yaml.safe_load(Path(args.scenario).read_text()) if args.scenario else {}
    result = simulate(canary, scenario or {})
    if args.output == "json":
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(render(result))
    return 0 if result.outcome in ("Succeeded", "Failed") else 2


def cmd_validate(args, ctx: Ctx | None = None) -> int:
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


def cmd_crds(args, ctx: Ctx | None = None) -> int:
    root = Path(__file__).resolve().parent.parent / "crds"
    for f in sorted(root.glob("*.yaml")):
        sys.stdout.write(f.read_text())
        if not f.read_text().endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.write("---\n")
    return 0


# ---- the parser ----------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="canary", description="Progressive delivery for Kubernetes.")
    ap.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    # accepted after the subcommand too (kubectl plugin style); the global one is the default
    kube = argparse.ArgumentParser(add_help=False)
    kube.add_argument("--kubeconfig", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")

    op = sub.add_parser("operator", help="run the operator")
    op.add_argument("--metrics-server", default="http://prometheus:9090", help="Prometheus URL for builtin metrics")
    op.add_argument("--mesh-provider", default="istio", help="istio | gatewayapi:v1 | gatewayapi:v1beta1")
    op.add_argument("--namespace", default=None, help="watch only this namespace (default: all)")
    op.add_argument("--label-selector", default=None, help="only Canaries with these labels (k=v,...)")
    op.add_argument("--selector-labels", default="app,name,app.kubernetes.io/name",
                    help="pod labels that select a workload's pods, first match wins (as Flagger's flag)")
    op.add_argument("--metrics-port", type=int, default=8080, help="port of the /metrics endpoint (0: off)")
    op.add_argument("--max-concurrent", type=int, default=50, help="ticks running at once")
    op.add_argument("--log-level", default="info")
    op.add_argument("--log-format", default="text", choices=["text", "json"])
    op.add_argument("--leader-election", action="store_true",
                    help="run several replicas: only the holder of a Lease acts")
    op.add_argument("--leader-election-namespace", default=None,
                    help="namespace of the Lease (default: the pod's namespace)")
    op.add_argument("--leader-election-id", default="canary-operator-leader",
                    help="name of the Lease (one per shard)")
    op.add_argument("--shutdown-timeout", type=float, default=20.0,
                    help="on SIGTERM, seconds the running ticks get to finish")
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    op.add_argument("--alert-webhook", default=None,
                    help="generic JSON webhook for alerts of Canaries without analysis.alerts")
    op.set_defaults(func=cmd_operator)

    sim = sub.add_parser("simulate", help="decide a release offline (real engine, virtual clock)")
    sim.add_argument("canary", help="a Canary manifest")
    sim.add_argument("--scenario", help="YAML: metric values per step, webhook answers, readiness")
    sim.add_argument("-o", "--output", choices=["text", "json"], default="text")
    sim.set_defaults(func=cmd_simulate)

    v = sub.add_parser("validate", help="check Canary manifests offline")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("status", aliases=["get"], parents=[kube, scope], help="one line per Canary",
                       description="One line per Canary: phase, weight/maxWeight, failed checks/threshold, the "
                                   "last metric values, age and what it is doing.")
    s.add_argument("name", nargs="?")
    s.add_argument("-A", "--all-namespaces", action="store_true")
    s.add_argument("-o", "--output", choices=["text", "json"], default="text")
    s.add_argument("-w", "--watch", action="store_true", help="print a line whenever a Canary changes")
    s.add_argument("--wait", action="store_true",
                   help="with NAME: wait for the current release; exit 0 Succeeded, 1 Failed, 2 timeout")
    s.add_argument("--timeout", type=_positive, default=None, help="seconds to --wait or --watch")
    s.add_argument("--interval", type=_positive, default=1.0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_status, cmd="status")

    e = sub.add_parser("explain", parents=[kube, scope], help="why a Canary was promoted or rolled back",
                       description="The decision ledger (status.ledger) as a timeline: what was decided, by whom, "
                                   "and the check values against their thresholds.")
    e.add_argument("name")
    e.add_argument("-o", "--output", choices=["text", "json"], default="text")
    e.add_argument("--queries", action="store_true", help="show every check with its query as executed")
    e.add_argument("--all", action="store_true", help=f"the whole ledger (default: the last {EXPLAIN_ENTRIES} entries)")
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
        c = sub.add_parser(command, parents=[kube, scope], help=helps[command], description=helps[command] + ".")
        c.add_argument("name")
        if command == "set-weight":
            c.add_argument("weight", type=int)
        c.add_argument("--reason", default="", help="why (recorded in the ledger and the events)")
        c.add_argument("--by", default=None, help="who (default: the kubeconfig user, else $USER)")
        c.add_argument("--force", action="store_true", help="set the annotation even if it will be rejected")
        c.add_argument("--wait", action="store_true", help="wait until the operator decided it (exit 1: rejected)")
        c.add_argument("--timeout", type=_positive, default=60.0, help="seconds to --wait (default 60)")
        c.set_defaults(func=cmd_command, cmd=command)

    c = sub.add_parser("crds", help="print the CRDs")
    c.set_defaults(func=cmd_crds)
    return ap


def main(argv: list[str] | None = None, ctx: Ctx | None = None) -> int:
    """Run one command; tests pass a Ctx with a fake Api, streams and clocks."""
    args = build_parser().parse_args(argv)
    if args.func in (cmd_operator, cmd_validate, cmd_crds):
        return args.func(args)
    if ctx is None:
        ctx = Ctx(api_factory=lambda: KubeApi(args.kubeconfig))
    try:
        return args.func(args, ctx)
    except CliError as e:
        print(f"error: {e}", file=ctx.err, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
