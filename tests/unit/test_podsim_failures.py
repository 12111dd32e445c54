"""The pod simulator's failing pods (sim.canary.dev/fail) look as a kubelet reports them, and the
operator's pod reader names them."""

from __future__ import annotations

import pytest

from canary.adapters.workload.pods import first_pod_problem
from testbed import podsim

IMAGE = "ghcr.io/stefanprodan/podinfo:nope"


def sim_pod(fail: str | None) -> dict:
    ann = {podsim.ANN_FAIL: fail} if fail else {}
    return {"metadata": {"name": "podinfo-5d8f9c-x2k", "namespace": "shop", "uid": "u1", "annotations": ann,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "podinfo-5d8f9c", "controller": True}]},
            "spec": {"nodeName": "sim-node", "containers": [{"name": "app", "image": IMAGE},
                                                             {"name": "sidecar", "image": "envoy:1"}]},
            "status": {"phase": "Pending"}}


@pytest.mark.parametrize(("fail", "phase"), [("ImagePullBackOff", "Pending"), ("ErrImagePull", "Pending"),
                                             ("CrashLoopBackOff", "Running")])
def test_failing_pods(fail, phase):
    pod = sim_pod(fail)
    st = podsim.desired_status(pod, "10.244.0.2", "10.0.0.10", True, "2024-01-01T00:00:00Z")
    assert st["phase"] == phase
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "False"  # never Ready
    app, sidecar = st["containerStatuses"]
    assert app["state"]["waiting"]["reason"] == fail and app["ready"] is False
    assert "running" in sidecar["state"]
    failed = dict(pod, status=st)
    assert podsim.status_matches(failed, True) and podsim.status_matches(failed, False)
    assert not podsim.status_matches(dict(sim_pod(None), status=st), True)  # the annotation removed: redo
    got = first_pod_problem([failed], "podinfo")
    assert got.startswith(f"pod podinfo-5d8f9c-x2k: container app: {fail}: ")
    if fail == "ImagePullBackOff":
        assert got.endswith(f'Back-off pulling image "{IMAGE}"')
    if fail == "CrashLoopBackOff":
        assert app["restartCount"] == 3 and app["lastState"]["terminated"]["exitCode"] == 1
        assert got.endswith("(restarted 3 times, last exit code 1)")


def test_a_healthy_pod_no_longer_matches_a_failed_status():
    st = podsim.desired_status(sim_pod("ImagePullBackOff"), "10.244.0.2", "10.0.0.10", True, "t")
    healthy = sim_pod(None)
    assert not podsim.status_matches(dict(healthy, status=st), True)
    st2 = podsim.desired_status(dict(healthy, status=st), "10.244.0.2", "10.0.0.10", True, "t2")
    assert st2["phase"] == "Running" and podsim.status_matches(dict(healthy, status=st2), True)
    assert podsim.failure_of(sim_pod("Whatever")) is None
