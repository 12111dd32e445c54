"""High availability and sharding, with real operator processes on the testbed.

* Two replicas with leader election: only the Lease holder acts; the follower watches. Killed
  with SIGKILL mid-analysis, the leader is replaced within the lease duration and the release
  completes with exactly one promotion. On SIGTERM the leader releases the Lease and the other
  replica takes over at once.
* Sharding: instances with disjoint label selectors (and one limited to a namespace) each
  handle only their own Canaries.

Who acted is read from two sources: each process's log (`tick <ns>/<name>` at debug level) and
the API server's audit log, where every request of an operator carries its identity in the
User-Agent (`canary-operator/<version> (<host>_<pid>)`).
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime

import kubernetes
import pytest

from testbed import cluster, ops
from tests.e2e.conftest import canary, deployment

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"
LEASE = "canary-operator-leader"
LEASE_DURATION, RETRY = 15, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, *extra: str) -> ops.OperatorProcess:
    return ops.OperatorProcess(name=f"{name}-{free_port()}", metrics_port=free_port(),
                               extra=["--log-level", "debug", *extra]).start()


def log(op: ops.OperatorProcess) -> str:
    try:
        return op.log_path.read_text(errors="replace")
    except OSError:
        return ""


def leads(op: ops.OperatorProcess) -> bool:
    return "became the leader" in log(op)


def ticked(op: ops.OperatorProcess, ns: str, name: str) -> int:
    return len(re.findall(rf"canary\.operator: tick {re.escape(ns)}/{re.escape(name)}$", log(op), re.M))


def identity(op: ops.OperatorProcess) -> str:
    return f"{socket.gethostname()}_{op.proc.pid}"


class Audit:
    """Requests of the operator identity in the testbed's audit log, from now on."""

    def __init__(self):
        self.path = cluster.paths().audit_log
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def entries(self) -> list[dict]:
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            f.seek(self.start if size >= self.start else 0)  # rotated: read the new file whole
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if (e.get("user") or {}).get("username") == cluster.IDENTITIES["operator"][1]:
                out.append(e)
        return out

    def writes(self, namespace: str) -> list[dict]:
        """create/update/patch/delete by the operators in `namespace`, Leases left out."""
        return [e for e in self.entries()
                if e["verb"] in ("create", "update", "patch", "delete")
                and (e.get("objectRef") or {}).get("namespace") == namespace
                and (e.get("objectRef") or {}).get("resource") != "leases"]


def by(entries: list[dict], op: ops.OperatorProcess) -> list[dict]:
    return [e for e in entries if f"({identity(op)})" in e.get("userAgent", "")]


def at(entry: dict) -> float:
    return datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def events(api_client, ns: str, name: str, reason: str) -> list:
    items = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items
    return [e for e in items if e.reason == reason and e.involved_object.kind == "Canary"]


def phase(api_client, ns, name):
    return ops.canary_status(api_client, ns, name).get("phase")


def wait_phase(api_client, ns, name, want, timeout, *procs):
    try:
        return ops.wait_until(lambda: phase(api_client, ns, name) in want and phase(api_client, ns, name),
                              timeout, f"{ns}/{name} in {want}")
    except TimeoutError:
        for p in procs:
            print(f"---- {p.name}\n{p.log_tail(40)}")
        raise


@pytest.fixture
def pair(testbed, namespace):
    """Two replicas with leader election on a Lease in the test's namespace."""
    procs = [start(f"ha-{x}", "--leader-election", "--leader-election-namespace", namespace,
                   "--leader-election-id", LEASE) for x in ("a", "b")]
    yield procs
    for p in procs:
        p.stop()


def test_one_leader_acts_and_a_killed_leader_is_replaced_with_one_promotion(api_client, namespace, pair):
    audit = Audit()
    ops.wait_until(lambda: any(leads(p) for p in pair), 30, "a leader")
    time.sleep(2)  # let a wrong second leader show itself, if any
    assert [leads(p) for p in pair].count(True) == 1, [p.log_tail(10) for p in pair]
    leader, follower = pair if leads(pair[0]) else pair[::-1]
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    assert lease.spec.holder_identity == identity(leader)

    ops.apply(api_client, deployment("podinfo"), namespace)
    ops.apply(api_client, canary("podinfo", interval="3s", max_weight=50, step_weight=10), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, *pair)
    apps = kubernetes.client.AppsV1Api(api_client)
    rev0 = apps.read_namespaced_deployment("podinfo-primary", namespace).spec.template.metadata.annotations[
        "canary.dev/revision"]
    assert ticked(leader, namespace, "podinfo") > 0 and ticked(follower, namespace, "podinfo") == 0

    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight", 0) >= 20, 60,
                   "weight 20 (mid-analysis)")
    assert ticked(follower, namespace, "podinfo") == 0
    leader.kill()  # SIGKILL: no release, the Lease stays with the dead leader until it expires
    killed = time.time()
    ops.wait_until(lambda: leads(follower), LEASE_DURATION + RETRY + 5, "the follower to take over")
    took = time.time() - killed
    assert took <= LEASE_DURATION + RETRY + 3, f"takeover after {took:.1f}s"
    assert wait_phase(api_client, namespace, "podinfo", {"Succeeded", "Failed"}, 120, follower) == "Succeeded"

    # exactly one promotion: one Promote event, and the primary's template written once
    promotes = events(api_client, namespace, "podinfo", "Promote")
    assert sum(e.count or 1 for e in promotes) == 1, [e.message for e in promotes]
    primary = apps.read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    assert primary.spec.template.metadata.annotations["canary.dev/revision"] != rev0
    writes = audit.writes(namespace)
    primary_updates = [e for e in writes if e["objectRef"]["resource"] == "deployments"
                       and e["objectRef"].get("name") == "podinfo-primary" and e["verb"] in ("update", "patch")]
    assert len(primary_updates) == 1, [(e["verb"], e["userAgent"]) for e in primary_updates]

    # never both: the leader's writes all before the kill, the follower's all after it took over
    mine, theirs = by(writes, leader), by(writes, follower)
    assert mine and theirs and len(mine) + len(theirs) == len(writes), \
        {e["userAgent"] for e in writes}
    assert max(at(e) for e in mine) <= killed + 0.5
    assert min(at(e) for e in theirs) >= killed + (LEASE_DURATION - 5)  # not before the lease ran out
    assert ticked(follower, namespace, "podinfo") > 0


def test_sigterm_releases_the_lease_and_the_other_replica_takes_over_at_once(api_client, namespace, pair):
    ops.wait_until(lambda: any(leads(p) for p in pair), 30, "a leader")
    leader, follower = pair if leads(pair[0]) else pair[::-1]
    ops.apply(api_client, deployment("podinfo"), namespace)
    ops.apply(api_client, canary("podinfo", interval="2s"), namespace)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, *pair)
    stopped = time.time()
    leader.stop(timeout=30)  # SIGTERM
    assert leader.proc.returncode == 0, leader.log_tail(30)
    assert "released lease" in log(leader)
    ops.wait_until(lambda: leads(follower), 10, "the follower to take over")
    assert time.time() - stopped < 2 * RETRY + 3  # a retry period, not a lease duration
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace)
    assert lease.spec.holder_identity == identity(follower)
    # and it acts: a release goes through
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    assert wait_phase(api_client, namespace, "podinfo", {"Succeeded", "Failed"}, 120, follower) == "Succeeded"


def test_sharding_by_label_selector_and_namespace(api_client, namespace, testbed):
    other = f"{namespace}-other"
    ops.ensure_namespace(api_client, other)
    audit = Audit()
    shard_a = start("shard-a", "--label-selector", "shard=a")
    shard_b = start("shard-b", "--label-selector", "shard=b", "--namespace", namespace)
    try:
        def labelled(name: str, shard: str) -> dict:
            body = canary(name, interval="2s", max_weight=20, step_weight=10)
            body["metadata"]["labels"] = {"shard": shard}
            return body

        for ns, name, shard in ((namespace, "alpha", "a"), (namespace, "beta", "b"), (other, "gamma", "b")):
            ops.apply(api_client, deployment(name), ns)
            ops.apply(api_client, labelled(name, shard), ns)
        wait_phase(api_client, namespace, "alpha", {"Initialized"}, 60, shard_a, shard_b)
        wait_phase(api_client, namespace, "beta", {"Initialized"}, 60, shard_a, shard_b)
        for name in ("alpha", "beta"):
            ops.patch_deployment(api_client, namespace, name, image=IMAGE2)
        wait_phase(api_client, namespace, "alpha", {"Succeeded"}, 120, shard_a)
        wait_phase(api_client, namespace, "beta", {"Succeeded"}, 120, shard_b)
        # gamma is shard b, but shard b only watches the first namespace: nobody handles it
        assert phase(api_client, other, "gamma") is None
        assert ops.canary_status(api_client, other, "gamma") == {}

        assert ticked(shard_a, namespace, "alpha") > 0 and ticked(shard_a, namespace, "beta") == 0
        assert ticked(shard_b, namespace, "beta") > 0 and ticked(shard_b, namespace, "alpha") == 0
        assert ticked(shard_a, other, "gamma") == ticked(shard_b, other, "gamma") == 0
        # and the API server agrees: each Canary's status was written by its own shard only
        status_writes = [e for e in audit.entries() if (e.get("objectRef") or {}).get("resource") == "canaries"
                         and e["objectRef"].get("subresource") == "status"]
        for op, name in ((shard_a, "alpha"), (shard_b, "beta")):
            writers = {e["userAgent"] for e in status_writes if e["objectRef"]["name"] == name}
            assert writers == {f"canary-operator/0.1.0 ({identity(op)})"}, writers
        assert not [e for e in status_writes if e["objectRef"]["name"] == "gamma"]
    finally:
        shard_a.stop()
        shard_b.stop()
        kubernetes.client.CoreV1Api(api_client).delete_namespace(other)
