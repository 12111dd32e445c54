"""The benchmark's watch of the fleet says why releases failed (bench/fleet.py)."""

from __future__ import annotations

import time

from bench.fleet import Timeline


def _obj(name: str, phase: str, check: str | None = None, message: str = "") -> dict:
    status: dict = {"phase": phase}
    if check:
        status["lastFailure"] = {"check": check, "message": message}
    return {"metadata": {"name": name}, "status": status}


def test_failures_count_each_entry_into_failed_once_per_check():
    tl = Timeline("ns")
    t0 = time.time()
    tl._record(_obj("a", "Progressing"))
    tl._record(_obj("a", "Failed", "progress-deadline", "canary deployment podinfo not ready"))
    tl._record(_obj("a", "Failed", "progress-deadline", "canary deployment podinfo not ready (again)"))
    tl._record(_obj("b", "Failed", "request-success-rate", "below 99"))
    tl._record(_obj("b", "Progressing"))
    tl._record(_obj("b", "Failed", "progress-deadline", "x"))
    tl._record(_obj("c", "Succeeded"))
    got = tl.failures(t0)
    assert got == {"progress-deadline": {"count": 2, "example": "canary deployment podinfo not ready"},
                   "request-success-rate": {"count": 1, "example": "below 99"}}
    assert tl.failures(time.time() + 1) == {}
