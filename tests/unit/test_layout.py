"""Test modules have unique basenames: tests/unit, tests/integration and tests/e2e are not
packages, so pytest imports each file by its basename, and two files of one name stop the
whole run at collection (CI runs every directory at once)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_every_test_module_has_its_own_basename():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1], names
