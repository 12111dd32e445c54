"""What may be shown of a string that came from outside (pure, no I/O).

Webhook and Prometheus answers, and every string in a spec, may carry terminal escape
sequences (ESC [ ... colour and cursor moves, ESC ] 52 ... clipboard writes, C1 CSI) and other
control characters. They are removed before such a string is stored (status.ledger,
conditions, Events), logged or printed (`canary explain`, `canary status`).
"""

from __future__ import annotations

import re

__all__ = ["clean", "printable", "snippet"]

# whole sequences first (OSC ... BEL/ST, CSI ... final byte, 2-character ESC x, C1 CSI), then
# any remaining C0/C1 control character and DEL
_ESCAPES = re.compile(r"\x1b\][^\x07\x1b\x9c]*(\x07|\x1b\\|\x9c)?|\x9d[^\x07\x1b\x9c]*(\x07|\x1b\\|\x9c)?"
                      r"|\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b[@-_]?")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """One line: escape sequences removed, control characters (tabs, newlines) made spaces,
    whitespace collapsed."""
    text = _ESCAPES.sub("", str(text))
    return " ".join(_CONTROLS.sub(" ", text).split())


def printable(text: str) -> str:
    """Multi-line text for a terminal: escape sequences and control characters removed, line
    breaks kept (tabs become spaces)."""
    text = _ESCAPES.sub("", str(text)).replace("\t", " ").replace("\r\n", "\n")
    return _CONTROLS_BUT_NEWLINE.sub("", text)


def snippet(text: str, limit: int = 100) -> str:
    """The start of a remote body as it may be shown: cleaned, at most `limit` characters."""
    text = clean(text)
    return text if len(text) <= limit else text[:limit] + "…"
