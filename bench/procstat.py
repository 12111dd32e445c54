"""CPU and memory of the testbed's processes, read from /proc (Linux).

`Procs.snapshot()` returns cumulative CPU seconds (user + system, children not included) and the
RSS of each named process; two snapshots give the cores each used in between."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testbed import cluster

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TESTBED = ("etcd", "kube-apiserver", "kube-controller-manager", "podsim", "trafficsim", "prometheus")


@dataclass(frozen=True)
class Sample:
    cpu_seconds: float
    rss_bytes: int


def read(pid: int) -> Sample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command may contain spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])
    return Sample((utime + stime) / CLK_TCK, int(statm[1]) * PAGE)


class Procs:
    """The testbed components (by their pid files) plus any extra named pids (the operator)."""

    def __init__(self, extra: dict[str, int] | None = None):
        p = cluster.paths()
        self.pids: dict[str, int] = {}
        for name in TESTBED:
            pid = cluster._pid(p, name)
            if pid:
                self.pids[name] = pid
        self.pids.update(extra or {})

    def snapshot(self) -> dict[str, Sample]:
        out = {}
        for name, pid in self.pids.items():
            s = read(pid)
            if s is not None:
                out[name] = s
        return out


def usage(before: dict[str, Sample], after: dict[str, Sample], seconds: float) -> dict[str, dict[str, float]]:
    """{name: {"cores": mean cores used, "rss_mb": RSS at the end}} between two snapshots."""
    out = {}
    for name, b in before.items():
        a = after.get(name)
        if a is None:
            continue
        out[name] = {"cores": round((a.cpu_seconds - b.cpu_seconds) / max(seconds, 1e-9), 3),
                     "rss_mb": round(a.rss_bytes / 2**20, 1)}
    out["total_cores"] = {"cores": round(sum(v["cores"] for v in out.values()), 3), "rss_mb": 0.0}
    return out
