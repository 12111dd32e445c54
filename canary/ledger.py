"""The decision ledger in ``status.ledger`` (pure helpers used by the engine and the CLI).

Rules that keep the status small:

* At most ``LEDGER_LIMIT`` entries; entries dropped from the front are counted in
  ``status.ledgerSummary`` (how many, the first entry's time, advances, halts, rollbacks,
  promotions and commands).
* A check's query is stored only when it differs from the last query recorded for that check
  earlier in the ledger (``queries()`` resolves them). When the front is dropped, the first
  remaining mention of each check gets its query back.
* Identical consecutive waits (kind ``wait``, e.g. a closed gate polled every interval)
  are merged into one entry with ``count`` and ``lastTime``; the checks show the latest values.
* Texts are bounded: queries to ``QUERY_MAX`` and messages to ``MESSAGE_MAX`` characters,
  whitespace collapsed.
"""

from __future__ import annotations

import math
from typing import Iterable, cast, get_args

from canary.models import (
    LEDGER_CHECKS_MAX,
    LEDGER_LIMIT,
    MESSAGE_MAX,
    QUERY_MAX,
    CanaryStatus,
    LedgerCheck,
    LedgerEntry,
    LedgerKind,
    LedgerSummary,
    LedgerWebhook,
)
from canary.text import clean
from canary.types import MetricResult, WebhookResult

__all__ = ["append", "checks_of", "webhooks_of", "queries", "clip", "kind_of", "command_of"]
_SHORT = 256


def clip(text: str | None, limit: int) -> str | None:
    """One line of at most `limit` characters, without control characters or terminal escapes
    (messages come from webhook and metric answers)."""
    if not text:
        return None
    text = clean(str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


_JUDGED = {"verdict": "verdict", "test": "test", "statistic": "statistic", "pValue": "p_value",
           "shift": "shift", "shiftLow": "shift_low", "shiftHigh": "shift_high",
           "canarySamples": "canary_samples", "primarySamples": "primary_samples"}


def _judged(m: MetricResult) -> dict[str, object]:
    """The judge's record of a compared check as LedgerCheck fields."""
    judged = m.judgement or {}
    return {field: judged[key] for key, field in _JUDGED.items() if key in judged}


def checks_of(metrics: Iterable[MetricResult] | None) -> list[LedgerCheck] | None:
    if metrics is None:
        return None
    out = [
        LedgerCheck(
            name=m.name,
            query=clip(m.query, QUERY_MAX),
            value=_finite(m.value),
            min=_finite(m.min),
            max=_finite(m.max),
            ok=bool(m.ok and (m.value is not None or m.judgement is not None)),
            message=clip(m.message, _SHORT),
            dry_run=True if m.dry_run else None,
            **_judged(m),
        )
        for m in metrics
    ][:LEDGER_CHECKS_MAX]
    return out or None


def webhooks_of(hooks: Iterable[WebhookResult]) -> list[LedgerWebhook] | None:
    out = [
        LedgerWebhook(
            name=h.name,
            type=h.type or "rollout",
            ok=h.ok,
            status_code=h.status_code,
            message=clip(h.message, _SHORT),
        )
        for h in hooks
    ][:LEDGER_CHECKS_MAX]
    return out or None


def queries(ledger: list[LedgerEntry]) -> list[dict[str, str]]:
    """For each entry, check name -> the query in effect (resolving the left-out ones)."""
    current: dict[str, str] = {}
    out: list[dict[str, str]] = []
    for entry in ledger:
        here: dict[str, str] = {}
        for check in entry.checks or []:
            if check.query:
                current[check.name] = check.query
            if check.name in current:
                here[check.name] = current[check.name]
        out.append(here)
    return out


def _last_queries(ledger: list[LedgerEntry]) -> dict[str, str]:
    current: dict[str, str] = {}
    for entry in ledger:
        for check in entry.checks or []:
            if check.query:
                current[check.name] = check.query
    return current


def _dedupe(entry: LedgerEntry, known: dict[str, str]) -> LedgerEntry:
    if not entry.checks:
        return entry
    checks = []
    for check in entry.checks:
        if check.query and known.get(check.name) == check.query:
            check = check.model_copy(update={"query": None})
        checks.append(check)
    return entry.model_copy(update={"checks": checks})


_KINDS: frozenset[str] = frozenset(get_args(LedgerKind))


def kind_of(entry: LedgerEntry) -> LedgerKind | None:
    """The kind of a ledger entry. Entries written before ``kind`` existed carry only the
    action text; this is the one place that reads it."""
    if entry.kind is not None:
        return entry.kind
    action = entry.action
    if action.startswith("command:"):
        return "command"
    if action.startswith("rejected:"):
        return "rejected"
    if action.startswith("wait"):
        return "wait"
    head = action.split(" ", 1)[0]
    return cast(LedgerKind, head) if head in _KINDS else None


def command_of(entry: LedgerEntry) -> str | None:
    """The command of a command or rejected entry (see kind_of for old entries)."""
    if entry.command is not None:
        return entry.command
    if kind_of(entry) in ("command", "rejected") and ":" in entry.action:
        words = entry.action.split(":", 1)[1].split()
        return words[0] if words else None
    return None


def _mergeable(last: LedgerEntry, entry: LedgerEntry) -> bool:
    return (
        kind_of(entry) == "wait"
        and (last.action, last.phase, last.weight, last.actor, last.message)
        == (entry.action, entry.phase, entry.weight, entry.actor, entry.message)
    )


_SUMMARY_COUNTS: dict[str, str] = {
    "advance": "advances",
    "halt": "halts",
    "rollback": "rollbacks",
    "promote": "promotions",
    "command": "commands",
    "rejected": "commands",
}


def _summarize(summary: LedgerSummary | None, dropped: list[LedgerEntry]) -> LedgerSummary:
    counts = {"advances": 0, "halts": 0, "rollbacks": 0, "promotions": 0, "commands": 0}
    if summary is not None:
        for key in counts:
            counts[key] = getattr(summary, key)
    for entry in dropped:
        counted = _SUMMARY_COUNTS.get(kind_of(entry) or "")
        if counted is not None:
            counts[counted] += entry.count or 1
    return LedgerSummary(
        entries=(summary.entries if summary else 0) + len(dropped),
        first_time=summary.first_time if summary else dropped[0].time,
        last_time=dropped[-1].last_time or dropped[-1].time,
        **counts,
    )


def append(status: CanaryStatus, entries: Iterable[LedgerEntry], limit: int = LEDGER_LIMIT) -> None:
    """Add decisions to ``status.ledger`` (in place on the engine's copy), bounded to `limit`."""
    ledger = list(status.ledger or [])
    for entry in entries:
        known = _last_queries(ledger)
        if ledger and _mergeable(ledger[-1], entry):
            last = ledger[-1]
            before = _last_queries(ledger[:-1])
            merged_checks = _dedupe(entry, before).checks
            ledger[-1] = last.model_copy(
                update={
                    "count": (last.count or 1) + 1,
                    "last_time": entry.time,
                    "checks": merged_checks,
                    "webhooks": entry.webhooks,
                }
            )
            continue
        ledger.append(_dedupe(entry, known))
    if len(ledger) > limit:
        dropped, kept = ledger[:-limit], ledger[-limit:]
        in_effect = _last_queries(dropped)
        restored: list[LedgerEntry] = []
        seen: set[str] = set()
        for entry in kept:
            if entry.checks:
                checks = []
                for check in entry.checks:
                    if check.name not in seen:
                        seen.add(check.name)
                        if not check.query and check.name in in_effect:
                            check = check.model_copy(update={"query": in_effect[check.name]})
                    checks.append(check)
                entry = entry.model_copy(update={"checks": checks})
            restored.append(entry)
        status.ledger_summary = _summarize(status.ledger_summary, dropped)
        ledger = restored
    status.ledger = ledger


def message(text: str | None) -> str | None:
    return clip(text, MESSAGE_MAX)
