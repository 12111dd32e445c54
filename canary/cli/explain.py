"""`canary explain`: the decision ledger as a timeline, and why the Canary is where it is."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from canary.cli.advice import advisory_lines, score_line, weight_cell
from canary.cli.api import EXIT_OK, Ctx, get_canary, namespace_of
from canary.cli.views import View, cut, format_check, hhmmss, note, num, timestamp
from canary.ledger import command_of, kind_of, queries
from canary.models import LedgerEntry
from canary.types import Phase

EXPLAIN_ENTRIES = 20
"""Entries `canary explain` shows by default (--all: the whole ledger)."""

_DECISIVE: dict[Phase, tuple[str, ...]] = {
    # phase -> the kinds of entry that decide it ("command:<name>" for a command entry)
    Phase.FAILED: ("rollback", "fail", "command:abort"),
    Phase.SUCCEEDED: ("promote", "command:promote", "cancel"),
    Phase.PROMOTING: ("promote", "command:promote"),
    Phase.FINALISING: ("promote", "command:promote"),
}


def deciding_index(phase: Phase, entries: list[LedgerEntry]) -> int | None:
    """The index of the ledger entry that decided the current phase."""
    decisive = _DECISIVE.get(phase)
    if not decisive:
        return None
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        kind = kind_of(entry)
        if kind in decisive or (kind == "command" and f"command:{command_of(entry)}" in decisive):
            return index
    return None


def _entry_line(entry: LedgerEntry) -> str:
    action = entry.action
    if (entry.count or 1) > 1:
        action += f" x{entry.count} until {hhmmss(entry.last_time)}"
    return f"{action}: {cut(entry.message, 160)}" if entry.message else action


def _why(view: View, deciding: LedgerEntry | None) -> str:
    status = view.status
    failure = status.last_failure
    if status.phase is Phase.FAILED:
        who = f" by {deciding.actor}" if deciding else ""
        when = f" at {hhmmss(deciding.time)}" if deciding else ""
        value = f" (value {num(failure.value)})" if failure is not None and failure.value is not None else ""
        check = failure.check if failure is not None else "?"
        message = failure.message if failure is not None else ""
        return f"Why: rolled back{when}{who}: check {check}{value}: {message}"
    if status.phase in (Phase.SUCCEEDED, Phase.PROMOTING, Phase.FINALISING) and deciding is not None:
        verb = "cancelled" if kind_of(deciding) == "cancel" else "promoted"
        checks = "; ".join(format_check(c) for c in deciding.checks or []) or "-"
        return (f"Why: {verb} at {hhmmss(deciding.time)} by {deciding.actor}: "
                f"{deciding.message or ''} (checks: {checks})")
    if status.paused is not None:
        return f"Why: {note(view)} since {hhmmss(status.paused.since)}"
    return f"Now: {note(view) or '-'}"


def explain_text(obj: dict[str, Any], show_queries: bool = False, show_all: bool = False) -> str:
    view = View.of(obj)
    status = view.status
    lines = [f"Canary {view.namespace}/{view.name}: {status.phase.value or '-'}, weight {status.canary_weight}"
             f"/{view.max_weight}, failed checks {status.failed_checks}/{view.threshold}, "
             f"revision {status.last_applied_spec or '-'} (promoted: {status.last_promoted_spec or '-'})"]
    entries = list(status.ledger or [])
    index = deciding_index(status.phase, entries)
    deciding = entries[index] if index is not None else None
    lines.append(_why(view, deciding))
    lines.extend(advisory_lines(view))
    last_command = status.last_command
    if last_command is not None:
        lines.append(f"Last command: {last_command.name} by {last_command.by or 'unknown'} at "
                     f"{hhmmss(last_command.time)}: {last_command.result}"
                     f"{': ' + last_command.message if last_command.message else ''}")
    summary = status.ledger_summary
    lines.append("")
    if summary is not None:
        lines.append(f"({summary.entries} earlier entries since {timestamp(summary.first_time)}: "
                     f"{summary.advances} advances, {summary.halts} halts, {summary.rollbacks} rollbacks, "
                     f"{summary.promotions} promotions, {summary.commands} commands)")
    if not entries:
        lines.append("No decisions recorded yet.")
        return "\n".join(lines)
    pairs = list(zip(entries, queries(entries)))
    hidden = 0 if show_all else max(0, len(pairs) - EXPLAIN_ENTRIES)
    if hidden:
        lines.append(f"({hidden} older entries not shown; --all shows them)")
    rows = [(entry, [hhmmss(entry.time), entry.phase.value or "-", weight_cell(entry), entry.actor,
                     _entry_line(entry)], resolved) for entry, resolved in pairs[hidden:]]
    header = ["TIME (UTC)", "PHASE", "WEIGHT", "ACTOR", "DECISION"]
    widths = [max(len(r[i]) for r in [cells for _, cells, _ in rows] + [header]) for i in range(4)]
    indent = " " * (sum(widths) + 2 * 4)

    def fmt(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2].rjust(widths[2]),
                          cells[3].ljust(widths[3]), cells[4]]).rstrip()

    lines.append(fmt(header))
    for entry, cells, resolved in rows:
        checks = entry.checks or []
        detailed = show_queries or entry is deciding or not all(c.ok for c in checks)
        if checks and not detailed:
            # all passed: the values inline, one line per decision
            cells = cells[:4] + [cells[4] + " [" + ", ".join(f"{c.name} {num(c.value)}" for c in checks) + " ok]"]
        lines.append(fmt(cells))
        for check in checks if detailed else []:
            lines.append(indent + "check " + format_check(check))
            if show_queries and check.name in resolved:
                lines.append(indent + "  query: " + resolved[check.name])
        if entry.score is not None and detailed:
            lines.append(indent + score_line(entry.score))
        for hook in entry.webhooks or []:
            code = f"HTTP {hook.status_code}" if hook.status_code is not None else "no answer"
            verdict = "ok" if hook.ok else "FAILED"
            if hook.type == "rollback" and hook.ok:
                verdict = "rollback requested"
            extra = f": {hook.message}" if hook.message else ""
            lines.append(indent + f"webhook {hook.name} ({hook.type}) {code} {verdict}{extra}")
    return "\n".join(lines)


def explain_json(obj: dict[str, Any]) -> dict[str, Any]:
    """The stored form (as the API returns it), with the left-out queries resolved."""
    view = View.of(obj)
    status = obj.get("status") or {}
    entries = list(view.status.ledger or [])
    raw = [dict(e) for e in status.get("ledger") or []]
    if len(raw) == len(entries):
        for entry, resolved in zip(raw, queries(entries)):
            checks = [{**c, "query": resolved.get(c.get("name"), c.get("query"))} for c in entry.get("checks") or []]
            if checks:
                entry["checks"] = checks
            else:
                entry.pop("checks", None)
        index = deciding_index(view.status.phase, entries)
        deciding = raw[index] if index is not None else None
    else:  # a foreign ledger that does not validate: shown as it is
        deciding = None
    return {
        "namespace": view.namespace,
        "name": view.name,
        "phase": status.get("phase"),
        "canaryWeight": status.get("canaryWeight", 0),
        "maxWeight": view.max_weight,
        "failedChecks": status.get("failedChecks", 0),
        "threshold": view.threshold,
        "lastAppliedSpec": status.get("lastAppliedSpec"),
        "lastPromotedSpec": status.get("lastPromotedSpec"),
        "lastFailure": status.get("lastFailure"),
        "decidedBy": deciding,
        "paused": status.get("paused"),
        "lastCommand": status.get("lastCommand"),
        "ledgerSummary": status.get("ledgerSummary"),
        "advisory": status.get("advisory"),
        "ledger": raw,
    }


def cmd_explain(args: argparse.Namespace, ctx: Ctx) -> int:
    obj = get_canary(ctx, namespace_of(ctx, args), args.name)
    if getattr(args, "plot", None):
        from canary.cli.plot import from_ledger, write

        write(from_ledger(View.of(obj)), args.plot)
        print(f"plot: {args.plot}", file=ctx.err, flush=True)
    if args.output == "json":
        ctx.print(json.dumps(explain_json(obj), indent=2))
    elif args.output == "yaml":
        ctx.print(yaml.safe_dump(explain_json(obj), sort_keys=False).rstrip())
    else:
        ctx.print(explain_text(obj, show_queries=args.queries, show_all=args.all))
    return EXIT_OK
