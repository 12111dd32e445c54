"""A frozen leader (SIGSTOP: no network, no timers, for longer than its lease) beside a
follower: the follower finishes the release, and the old leader, once it wakes up, writes
nothing (every write is fenced in its client). Its own module: no other operator may run
beside the pair (the module-scoped operator of test_chaos.py watches every namespace)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment
from tests.e2e.test_chaos import GOOD, Watch, _release
from tests.e2e.test_ha import Audit, at, by, identity, leads, pair  # noqa: F401 (pair: a fixture)

pytestmark = pytest.mark.testbed


def test_a_frozen_leader_writes_nothing_once_its_lease_ran_out(api_client, namespace, pair):
    """The leader stops (SIGSTOP: no network, no timers) for longer than the lease; the follower
    takes over and finishes the release; when the old leader wakes up it must not write (its
    Lease renewal is overdue, so every write is fenced in its client)."""
    a, b = pair
    try:
        ops.wait_until(lambda: leads(a) or leads(b), 30, "a leader")
        leader, follower = (a, b) if leads(a) else (b, a)
        ops.apply(api_client, deployment("podinfo"), namespace)
        ops.apply(api_client, canary("podinfo", interval="2s", max_weight=30, step_weight=10), namespace)
        ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("phase") == "Initialized",
                       90, "Initialized")
        audit = Audit()
        before = ops.canary_status(api_client, namespace, "podinfo").get("lastAppliedSpec")
        _release(api_client, namespace, GOOD.format(92), bad=False)
        ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight", 0) >= 10,
                       60, "the first step")
        os.kill(leader.proc.pid, signal.SIGSTOP)
        frozen = time.time()
        ops.wait_until(lambda: leads(follower), 30, "the follower to take over")
        took_over = time.time()
        watch = Watch(api_client, namespace)
        st = watch.until_done(before, 120)
        os.kill(leader.proc.pid, signal.SIGCONT)  # wakes up believing, for a moment, it leads
        time.sleep(6)
        assert st["phase"] == "Succeeded" and not watch.violations
        writes = audit.writes(namespace)
        late = [e for e in by(writes, leader) if at(e) > frozen + 1]
        assert not late, [(e["verb"], e["objectRef"]) for e in late]
        assert by(writes, follower), "the follower did not act"
        print(f"chaos: frozen leader replaced after {took_over - frozen:.1f}s, 0 writes after its lease ran out")
        assert identity(leader) != identity(follower)
    finally:
        for p in (a, b):
            try:
                os.kill(p.proc.pid, signal.SIGCONT)
            except (ProcessLookupError, AttributeError):
                pass

