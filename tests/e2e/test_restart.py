"""The operator is killed mid-analysis and restarted: the release resumes where it was and is
promoted exactly once (state lives in the Canary's status, not in the process)."""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment, free_port
from tests.e2e.test_operator import vs_weights, wait_phase

pytestmark = pytest.mark.testbed


def test_killed_mid_analysis_resumes_and_promotes_once(api_client, namespace, testbed):
    op = ops.OperatorProcess(name=f"e2e-restart-{free_port()}", metrics_port=free_port()).start()
    try:
        ops.apply(api_client, deployment("podinfo"), namespace)
        ops.apply(api_client, canary("podinfo", interval="3s", max_weight=50, step_weight=10), namespace)
        wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, op)
        ops.patch_deployment(api_client, namespace, "podinfo", image="ghcr.io/stefanprodan/podinfo:6.0.1")
        ops.wait_until(lambda: ops.canary_status(api_client, namespace, "podinfo").get("canaryWeight", 0) >= 20,
                       60, "weight 20")
        op.kill()  # SIGKILL mid-analysis
        at_kill = vs_weights(api_client, namespace, "podinfo")
        assert at_kill and at_kill[1] >= 20
        time.sleep(4)  # more than an interval with no operator: nothing moves
        assert vs_weights(api_client, namespace, "podinfo") == at_kill

        op = ops.OperatorProcess(name=f"e2e-restart-b-{free_port()}", metrics_port=free_port()).start()
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            st = ops.canary_status(api_client, namespace, "podinfo")
            w = vs_weights(api_client, namespace, "podinfo")
            seen.append((st.get("phase"), w[1] if w else None))
            if st.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.2)
        assert seen[-1][0] == "Succeeded", (seen[-5:], op.log_tail(40))
        # never went back to weight 0 while progressing after the restart
        progressing = [w for phase, w in seen if phase == "Progressing"]
        assert progressing and min(progressing) >= at_kill[1], progressing
        events = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        promotes = [e for e in events if e.reason == "Promote" and e.involved_object.name == "podinfo"]
        assert sum(e.count or 1 for e in promotes) == 1, [e.message for e in promotes]  # identical events are counted
        primary = kubernetes.client.AppsV1Api(api_client).read_namespaced_deployment("podinfo-primary", namespace)
        assert primary.spec.template.spec.containers[0].image.endswith("6.0.1")
    finally:
        op.stop()
