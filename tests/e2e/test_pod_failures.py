"""The first failing pod's reason reaches people (Flagger #1533), through the operator process on
the real API server: a release whose image cannot be pulled fails at the progress deadline with
"ImagePullBackOff" in the status message, the Warning Event and the alert a webhook receives;
a new Canary whose primary cannot start fails its initialization the same way.

The pod simulator plays the kubelet: ``sim.canary.dev/fail`` on the pod template makes the first
container fail as a kubelet reports it (testbed/podsim.py). The operator runs with
``--event-webhook`` and ``--cluster-name``: the Events reach the global event webhook too, and
the alerts name the cluster."""

from __future__ import annotations

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import HookServer, canary, deployment, free_port
from tests.e2e.test_operator import wait_phase

pytestmark = pytest.mark.testbed

UNPULLABLE = "ghcr.io/stefanprodan/podinfo:does-not-exist"
FAIL = "sim.canary.dev/fail"
CLUSTER = "testbed-e2e"


@pytest.fixture(scope="module")
def hooks_server():
    s = HookServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def operator(testbed, hooks_server):
    port = free_port()
    op = ops.OperatorProcess(name=f"e2e-pod-failures-{port}", metrics_port=port,
                             extra=["--event-webhook", f"{hooks_server.url}/events", "--cluster-name", CLUSTER]).start()
    yield op
    op.stop()
    if op.proc and op.proc.returncode not in (0, -15, None):
        print(op.log_tail(80))


@pytest.fixture
def hooks(hooks_server):
    return hooks_server


def event_hooks(hooks, ns: str, text: str) -> list[dict]:
    return [b for b in hooks.paths("/events") if b.get("namespace") == ns
            and b.get("metadata", {}).get("eventType") == "Warning" and text in b["metadata"].get("eventMessage", "")]


def warning_events(api_client, ns: str, reason: str) -> list:
    items = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(
        ns, field_selector="involvedObject.name=podinfo").items
    return [e for e in items if e.reason == reason and e.type == "Warning" and e.involved_object.kind == "Canary"]


def apply_canary(api_client, ns: str, hooks, **kw) -> None:
    ops.apply(api_client, {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider",
                           "metadata": {"name": "hook"}, "spec": {"type": "generic", "address": f"{hooks.url}/alerts"}},
              ns)
    c = canary("podinfo", interval="1s", progressDeadlineSeconds=8, **kw)
    c["spec"]["analysis"]["alerts"] = [{"name": "hook", "providerRef": {"name": "hook"}, "severity": "error"}]
    ops.apply(api_client, c, ns)


def error_alerts(hooks, ns: str, text: str) -> list[dict]:
    return [b for b in hooks.paths("/alerts") if b.get("namespace") == ns and b.get("severity") == "error"
            and text in b.get("message", "")]


def test_an_image_that_cannot_be_pulled_is_named_at_the_deadline(api_client, namespace, operator, hooks):
    ops.apply(api_client, deployment("podinfo"), namespace)
    apply_canary(api_client, namespace, hooks)
    wait_phase(api_client, namespace, "podinfo", {"Initialized"}, 60, operator)
    ops.patch_deployment(api_client, namespace, "podinfo", image=UNPULLABLE, annotations={FAIL: "ImagePullBackOff"})
    wait_phase(api_client, namespace, "podinfo", {"Failed"}, 60, operator)

    st = ops.canary_status(api_client, namespace, "podinfo")
    promoted = {c["type"]: c for c in st["conditions"]}["Promoted"]
    assert "progress deadline exceeded" in promoted["message"]
    assert "ImagePullBackOff" in promoted["message"] and UNPULLABLE in promoted["message"], promoted
    assert st["lastFailure"]["check"] == "progress-deadline" and "ImagePullBackOff" in st["lastFailure"]["message"]
    # the Events follow the status write (a tick tells people only about a decision it wrote)
    (rollback,) = ops.wait_until(lambda: warning_events(api_client, namespace, "Rollback"), 15, "the Rollback Event")
    assert "ImagePullBackOff" in rollback.message and "pod podinfo-" in rollback.message, rollback.message
    alerts = ops.wait_until(lambda: error_alerts(hooks, namespace, "ImagePullBackOff"), 15,
                            "the alert with the pod's reason")
    assert alerts[0]["message"].startswith(f"Progress deadline exceeded for podinfo.{namespace}: ")
    assert alerts[0]["check"] == "progress-deadline" and alerts[0]["cluster"] == CLUSTER
    # the global event webhook got the Warning Event too
    ops.wait_until(lambda: event_hooks(hooks, namespace, "ImagePullBackOff"), 10, "the Event at --event-webhook")


def test_a_primary_that_cannot_start_is_named_when_initialization_fails(api_client, namespace, operator, hooks):
    ops.apply(api_client, deployment("podinfo", annotations={FAIL: "CrashLoopBackOff"}), namespace)
    apply_canary(api_client, namespace, hooks)
    wait_phase(api_client, namespace, "podinfo", {"Failed"}, 60, operator)
    st = ops.canary_status(api_client, namespace, "podinfo")
    promoted = {c["type"]: c for c in st["conditions"]}["Promoted"]
    assert "Initialization failed" in promoted["message"], promoted
    assert "pod podinfo-primary-" in promoted["message"] and "CrashLoopBackOff" in promoted["message"], promoted
    (failed,) = ops.wait_until(lambda: warning_events(api_client, namespace, "InitializationFailed"), 15,
                               "the InitializationFailed Event")
    assert "CrashLoopBackOff" in failed.message
    ops.wait_until(lambda: error_alerts(hooks, namespace, "CrashLoopBackOff"), 15, "the alert with the pod's reason")
