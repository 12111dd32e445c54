"""Remote-sourced strings lose terminal escapes and control characters before they are stored
or printed (issue 10: `canary explain` printed OSC 52 clipboard writes from webhook bodies)."""

from __future__ import annotations

import io
from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from canary import commands, ledger
from canary.text import clean, printable, snippet
from canary.types import WebhookResult

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
HOSTILE = f"gate closed {OSC52}\x1b[2J\x1b[31mred\x1b[0m\x9b1A\x07\x00\x85 done"


def test_clean_and_printable() -> None:
    assert clean(HOSTILE) == "gate closed red done"
    assert printable("line 1\x1b[31m\nline\t2" + OSC52) == "line 1\nline 2"
    assert snippet("a" * 300, 100) == "a" * 100 + "…"


@given(st.text())
def test_no_control_character_survives(text: str) -> None:
    for out in (clean(text), snippet(text)):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in printable(text))


def test_ledger_messages_are_cleaned() -> None:
    (hook,) = ledger.webhooks_of([WebhookResult("gate", "confirm-rollout", ok=False, status_code=403,
                                                message=HOSTILE)])
    assert hook.message == "gate closed red done"
    assert ledger.clip(HOSTILE, 512) == "gate closed red done"


def test_command_annotations_are_cleaned() -> None:
    cmd = commands.parse("abort", commands.encode("mallory" + OSC52, reason="oops\x1b[2J"))
    assert cmd.by == "mallory" and cmd.reason == "oops"


def test_explain_prints_no_escape_sequence() -> None:
    from canary import cli

    now = datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")
    obj = {"metadata": {"name": "podinfo", "namespace": "test"},
           "status": {"phase": "Failed", "ledger": [{"time": now, "phase": "Failed", "weight": 0,
                                                     "action": "rollback", "actor": "webhook:gate",
                                                     "message": "raw " + OSC52 + " \x1b[2J end"}]}}
    out = io.StringIO()
    cli.Ctx(api_factory=None, out=out).print(cli.explain_text(obj))
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue() and "raw" in out.getvalue()
