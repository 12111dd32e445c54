"""A Canary as the CLI shows it, read through the models (canary.models), never re-deriving
what they already say (max weight, threshold, strategy, phases)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from canary.commands import ANNOTATIONS, annotation
from canary.models import Analysis, CanaryStatus, LedgerCheck, format_timestamp
from canary.revision import template_hash
from canary.types import Phase

M = TypeVar("M", bound=BaseModel)


def _locate(data: Any, loc: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """(container, key) of the value at an error location; components that are not in the
    data (pydantic's union tags) are skipped."""
    node: Any = data
    parent: Any = None
    key: Any = None
    for part in loc:
        if isinstance(node, dict) and part in node:
            parent, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, key, node = node, part, node[part]
    return (parent, key) if parent is not None else None


def lenient(model: type[M], data: Any) -> M:
    """`data` as `model`, salvaging what a foreign or older writer got wrong: strings over
    their bound are cut, other invalid values (or objects missing a required field) are left
    out, rather than making the whole object unreadable. The CLI only reads."""
    data = copy.deepcopy(data) if isinstance(data, dict) else {}
    for _ in range(50):
        try:
            return model.model_validate(data)
        except ValidationError as e:
            errors = e.errors()
        removals: list[tuple[Any, Any]] = []
        for err in errors:
            loc = tuple(err["loc"])
            if err["type"] == "missing":
                loc = loc[:-1]  # the object lacking the field goes
            if not loc:
                return model()
            where = _locate(data, loc)
            if where is None:
                return model()
            parent, key = where
            value = parent[key]
            if err["type"] == "string_too_long" and isinstance(value, str):
                parent[key] = value[: int((err.get("ctx") or {}).get("max_length", 0))]
            else:
                removals.append((parent, key))
        # list items from the back, so the other indexes stay right
        for parent, key in sorted(removals, key=lambda r: r[1] if isinstance(r[1], int) else -1, reverse=True):
            try:
                del parent[key]
            except (KeyError, IndexError):
                pass
    return model()


@dataclass(frozen=True)
class View:
    raw: dict[str, Any]
    namespace: str
    name: str
    analysis: Analysis
    status: CanaryStatus
    annotations: dict[str, Any]
    generation: int | None
    created: datetime | None
    target: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> View:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        generation = meta.get("generation")
        status = lenient(CanaryStatus, obj.get("status"))
        return cls(
            raw=obj,
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            analysis=lenient(Analysis, spec.get("analysis")),
            status=status,
            annotations=dict(meta.get("annotations") or {}),
            generation=generation if isinstance(generation, int) else None,
            created=parse_time(meta.get("creationTimestamp")),
            target=str((spec.get("targetRef") or {}).get("name", "")),
        )

    @property
    def phase(self) -> Phase:
        return self.status.phase

    @property
    def paused(self) -> bool:
        """Held by a pause, or about to be (the annotation is set)."""
        return self.status.paused is not None or annotation("pause") in self.annotations

    @property
    def max_weight(self) -> int:
        return self.analysis.max_weight_value

    @property
    def threshold(self) -> int:
        return self.analysis.threshold_value


# ---- text helpers ------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def ago(then: datetime | None, now: datetime) -> str:
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


def hhmmss(value: Any) -> str:
    t = parse_time(value)
    return t.strftime("%H:%M:%S") if t else "-"


def timestamp(value: datetime | None) -> str:
    return format_timestamp(value) if value is not None else "-"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def num(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


# ---- pieces of a view --------------------------------------------------------------------------


def last_checks(status: CanaryStatus) -> list[LedgerCheck]:
    for entry in reversed(status.ledger or []):
        if entry.checks:
            return entry.checks
    return []


def format_check(check: LedgerCheck) -> str:
    bounds = []
    if check.min is not None:
        bounds.append(f"min {num(check.min)}")
    if check.max is not None:
        bounds.append(f"max {num(check.max)}")
    text = f"{check.name} {num(check.value) if check.value is not None else 'no value'}"
    if bounds:
        text += f" ({', '.join(bounds)})"
    text += " ok" if check.ok else " FAILED"
    if check.dry_run:
        text += " (dry run, advisory)"
    if check.verdict:
        text += " " + format_judgement(check)
    elif check.message and not check.ok:
        text += f": {cut(check.message, 100)}"
    return text


def format_judgement(check: LedgerCheck) -> str:
    """The judge's verdict of a compared check: test, p-value, shift and interval, samples."""
    parts = [f"vs primary {check.verdict}"]
    if check.test not in (None, "none"):
        parts.append(str(check.test))
    if check.p_value is not None:
        parts.append(f"p={check.p_value:.3g}")
    if check.shift is not None:
        interval = ""
        if check.shift_low is not None and check.shift_high is not None:
            interval = f" [{check.shift_low:+.4g}, {check.shift_high:+.4g}]"
        label = "spread ratio" if check.test == "dispersion" else "shift"
        parts.append(f"{label} {check.shift:+.4g}{interval}")
    parts.append(f"samples {check.canary_samples or 0}/{check.primary_samples or 0}")
    return "(" + ", ".join(parts) + ")"


def short_checks(status: CanaryStatus) -> str:
    checks = last_checks(status)
    if not checks:
        return "-"
    return ", ".join(f"{c.name}={num(c.value)}{'' if c.ok else '!'}" for c in checks)


def note(view: View) -> str:
    """The most useful short message about a Canary's state."""
    status = view.status
    paused = status.paused
    if paused is not None:
        who = f" by {paused.by}" if paused.by else ""
        why = f": {paused.reason}" if paused.reason else ""
        return f"paused{who}{why}"
    failure = status.last_failure
    if status.phase is Phase.FAILED and failure is not None:
        return cut(failure.message or "", 120)
    stalled = status.condition("Stalled")
    if stalled is not None and stalled.status == "True":
        return cut(stalled.message or "", 120)
    advisory = status.advisory
    if advisory is not None and advisory.verdict is not None and status.phase is Phase.WAITING_PROMOTION:
        would = "would promote" if advisory.verdict == "Promote" else "would roll back"
        return cut(f"advisory: {would}: {advisory.reason or ''}; waiting for promote or abort", 120)
    if status.ledger:
        last = status.ledger[-1]
        text = last.action
        if last.message:
            text += f": {last.message}"
        return cut(text, 120)
    return ""


def status_row(view: View, now: datetime, with_age: bool = True) -> list[str]:
    status = view.status
    phase = status.phase.value or "-"
    if status.paused is not None:
        phase += " (paused)"
    row = [
        view.namespace,
        view.name,
        phase,
        f"{status.canary_weight}/{view.max_weight}",
        f"{status.failed_checks}/{view.threshold}",
        short_checks(status),
    ]
    if with_age:
        row.append(ago(view.created, now))
    row.append(note(view))
    return row


STATUS_HEADER = ["NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILED", "CHECKS", "AGE", "MESSAGE"]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [str(c).ljust(widths[i]) if i < len(header) - 1 else str(c) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def revision_of(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return template_hash(((deployment.get("spec") or {}).get("template")) or {})


def outcome(view: View, deployment: dict[str, Any] | None) -> int | None:
    """0 (Succeeded) / 1 (Failed) once the current release is decided; None while it is not.

    Decided: the phase is Succeeded or Failed (or Initialized with nothing to release), the
    operator has seen the target's current revision, and no command is pending (pause aside).
    """
    status = view.status
    if any(a in view.annotations for a in ANNOTATIONS if a != annotation("pause")):
        return None
    if view.paused:
        return None
    if view.generation is not None and status.observed_generation not in (None, view.generation):
        return None
    revision = revision_of(deployment)
    if revision is not None and not status.tracked_configs:
        # tracked configs fold into the revision; without them it is the template hash
        if status.last_applied_spec and revision != status.last_applied_spec:
            return None  # the operator has not picked up the new revision yet
    if status.phase is Phase.SUCCEEDED:
        return 0
    if status.phase is Phase.FAILED:
        return 1
    if status.phase is Phase.INITIALIZED and (revision is None or revision == status.last_promoted_spec):
        return 0
    return None
