"""The testbed's own life cycle. Runs last (directory name) because it stops and restarts
the testbed that the rest of the session uses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from testbed import cluster

pytestmark = pytest.mark.testbed


def _our_processes() -> list[str]:
    """Command lines of live processes that belong to this testbed's state directory."""
    root = str(cluster.paths().root)
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and root + "/" in cmd:
            found.append(cmd)
    return found


def test_down_leaves_nothing_and_up_is_fast_and_idempotent(testbed):
    assert cluster.status()["running"]
    stopped = cluster.down()
    assert set(stopped) == set(cluster.COMPONENTS)
    assert _our_processes() == []
    assert not cluster.status()["running"]
    assert cluster.down() == []  # nothing left to stop

    t0 = time.monotonic()
    info = cluster.up()
    cold = time.monotonic() - t0
    assert info["running"]
    assert cold < 30, f"cold start took {cold:.1f}s"
    pids = info["processes"]
    again = cluster.up()  # idempotent: the same processes
    assert again["processes"] == pids
    print(f"testbed cold start: {cold:.1f}s")
