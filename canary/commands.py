"""Command annotations: parsing (operator side) and encoding (CLI side). Pure.

A command is the annotation ``canary.dev/<name>`` on a Canary. Its value is either a JSON
object ``{"by": "alice", "reason": "...", "at": "2026-01-01T10:00:00Z"}`` (what the CLI
writes; set-weight adds ``"weight": 40``) or a plain string, as a ``kubectl annotate`` user
would write it: the reason for abort, the weight for set-weight, anything for the others.

The command id is a digest of the name and the raw value. The engine records it in
``status.consumedCommands`` when it decides the command, which is what makes a command that
is seen twice (the annotation could not be cleared yet) act only once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from canary.text import clean
from canary.types import COMMAND_NAMES, COMMAND_PREFIX, Command

__all__ = ["ANNOTATIONS", "annotation", "command_id", "parse", "parse_annotations", "encode"]

ANNOTATIONS = tuple(COMMAND_PREFIX + name for name in COMMAND_NAMES)
_TEXT_MAX = 256
_TRUTHY = {"", "true", "yes", "1", "y", "on", "now"}


def annotation(name: str) -> str:
    return COMMAND_PREFIX + name


def command_id(name: str, raw: str) -> str:
    return hashlib.sha256(f"{name}\0{raw}".encode("utf-8")).hexdigest()[:12]


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = clean(str(value))  # no control characters or terminal escapes from an annotation
    return text[:_TEXT_MAX]


def _weight(value: Any) -> tuple[int | None, str]:
    if isinstance(value, bool):
        return None, f"weight {value!r} is not a whole number"
    if isinstance(value, int):
        return value, ""
    if isinstance(value, float) and value.is_integer():
        return int(value), ""
    text = str(value).strip().rstrip("%").strip()
    try:
        return int(text), ""
    except ValueError:
        return None, f"weight {str(value)[:40]!r} is not a whole number"


def parse(name: str, raw: str) -> Command:
    """One command from its annotation value (never raises: bad values carry `error`)."""
    cid = command_id(name, raw)
    data: Any = None
    stripped = raw.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
    if isinstance(data, dict):
        by, reason, at = _text(data.get("by")), _text(data.get("reason")), _text(data.get("at"))
        weight, error = (None, "")
        if name == "set-weight":
            if "weight" in data:
                weight, error = _weight(data.get("weight"))
            else:
                error = "no weight given"
        return Command(name=name, id=cid, by=by, reason=reason, at=at, weight=weight, error=error)
    # a plain string
    if name == "set-weight":
        weight, error = _weight(stripped)
        return Command(name=name, id=cid, weight=weight, error=error)
    reason = "" if stripped.lower() in _TRUTHY else _text(stripped)
    return Command(name=name, id=cid, reason=reason)


def parse_annotations(annotations: Mapping[str, Any] | None) -> tuple[Command, ...]:
    """The command annotations present, in the engine's decision order."""
    annotations = annotations or {}
    out = []
    for name in COMMAND_NAMES:
        raw = annotations.get(annotation(name))
        if raw is None:
            continue
        out.append(parse(name, str(raw)))
    return tuple(out)


def encode(by: str, reason: str = "", at: str = "", weight: int | None = None) -> str:
    """The JSON value the CLI writes (keys sorted, so equal inputs give equal ids)."""
    body: dict[str, Any] = {"by": by}
    if reason:
        body["reason"] = reason
    if at:
        body["at"] = at
    if weight is not None:
        body["weight"] = weight
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
