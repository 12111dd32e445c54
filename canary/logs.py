"""The operator's log formats: `text` (unchanged) and `json`, one JSON object per line.

A JSON line has `time` (RFC 3339, UTC with its zone), `level`, `logger`, `message`, and on
every line about a Canary `canary` and `namespace`; a traceback is inside the object
(`traceback`), never on lines of its own. Which Canary a line is about comes from, in order:
kopf's per-object logger (`k8s_ref`), the Canary whose tick is running (`about`, a context
variable the operator sets at the start of each tick, so every line of the reconciler and the
adapters during that tick carries it), or a "%s/%s" of namespace and name in the message's
arguments (the scheduler's lines)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("canary_log_about", default=None)


def about(namespace: Any, name: Any) -> None:
    """The lines logged from here on in this task are about this Canary."""
    _current.set((str(namespace or ""), str(name or "")))


def _subject(record: logging.LogRecord) -> tuple[str, str] | None:
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        return str(ref.get("namespace") or ""), str(ref["name"])
    current = _current.get()
    if current is not None:
        return current
    args = record.args
    msg = record.msg if isinstance(record.msg, str) else ""
    if isinstance(args, tuple) and "%s/%s" in msg:
        # the arguments of the first "%s/%s": count the conversions before it
        before = msg.split("%s/%s", 1)[0].replace("%%", "").count("%")
        if len(args) >= before + 2 and all(isinstance(a, str) for a in args[before:before + 2]):
            return str(args[before]), str(args[before + 1])
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        subject = _subject(record)
        if subject is not None:
            out["namespace"], out["canary"] = subject
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings are log lines too (JSON in JSON)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
