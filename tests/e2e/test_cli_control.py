"""Controlling releases with the real `canary` CLI (a subprocess) against the operator on the testbed:
promote, abort, retry, pause/resume, set-weight, `status --wait` exit codes and `explain`.

Every command goes through annotations on the Canary, exactly as `kubectl annotate` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import kubernetes
import pytest

from tests.e2e.conftest import routed
from testbed import cluster, ops
from tests.e2e.test_operator import IMAGE2, _apps, phase, setup_canary, vs_weights, wait_phase

pytestmark = pytest.mark.testbed

NAME = "podinfo"
WHO = "user"  # the user name in the testbed's admin kubeconfig


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "canary.cli", "--kubeconfig", str(cluster.paths().kubeconfig("admin")), *args]


def canary_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv(*args), capture_output=True, text=True, timeout=timeout, cwd=str(ops.REPO))


def background(*args: str) -> subprocess.Popen:
    return subprocess.Popen(argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ops.REPO))


def status(api_client, ns) -> dict:
    return ops.canary_status(api_client, ns, NAME)


def events(api_client, ns) -> list:
    items = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(ns).items
    return [e for e in items if e.involved_object.kind == "Canary"]


def annotations(api_client, ns) -> dict:
    return (ops.get_canary(api_client, ns, NAME) or {}).get("metadata", {}).get("annotations") or {}


def ledger_actions(api_client, ns) -> list[str]:
    return [e["action"] for e in status(api_client, ns).get("ledger") or []]


def weight_at_least(api_client, ns, w: int, timeout: float = 60) -> None:
    ops.wait_until(lambda: status(api_client, ns).get("canaryWeight", 0) >= w, timeout, f"canary weight >= {w}")


def release(api_client, ns, **annotations_) -> None:
    ops.patch_deployment(api_client, ns, NAME, image=IMAGE2, annotations=annotations_ or None)


def test_promote_mid_analysis_succeeds_early(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=50, step_weight=5, interval="2s")
    waiter = background("status", NAME, "-n", namespace, "--wait", "--timeout", "150")
    release(api_client, namespace)
    weight_at_least(api_client, namespace, 10)
    result = canary_cli("promote", NAME, "-n", namespace, "--reason", "verified by hand")
    assert result.returncode == 0, result.stderr
    assert "skips the remaining analysis" in result.stdout
    wait_phase(api_client, namespace, NAME, {"Succeeded", "Failed"}, 60, operator)
    st = status(api_client, namespace)
    assert st["phase"] == "Succeeded"
    weights = [e["weight"] for e in st["ledger"]]
    assert max(weights) < 50, weights  # the remaining steps were skipped
    primary = _apps(api_client).read_namespaced_deployment(f"{NAME}-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    entry = next(e for e in st["ledger"] if e["action"].startswith("command: promote"))
    assert entry["action"] == f"command: promote by {WHO}" and entry["actor"] == f"user:{WHO}"
    assert st["lastCommand"]["result"] == "Applied" and st["lastCommand"]["reason"] == "verified by hand"
    assert "canary.dev/promote" not in annotations(api_client, namespace)
    ops.wait_until(lambda: any(e.reason == "CommandApplied" and f"promote by {WHO}" in e.message
                               for e in events(api_client, namespace)), 15, "the CommandApplied event")
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, (out, err)
    assert "Succeeded" in out


def test_abort_then_retry_the_same_revision(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=50, step_weight=5, interval="2s")
    release(api_client, namespace)
    template = _apps(api_client).read_namespaced_deployment(NAME, namespace).spec.template.to_dict()
    weight_at_least(api_client, namespace, 10)
    waiter = background("status", NAME, "-n", namespace, "--wait", "--timeout", "60")
    result = canary_cli("abort", NAME, "-n", namespace, "--reason", "p99 latency doubled", "--wait")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines()[-1] == "applied: rolled back: p99 latency doubled"
    st = status(api_client, namespace)
    assert st["phase"] == "Failed"
    assert st["lastFailure"]["check"] == "abort"
    assert st["lastFailure"]["message"] == f"aborted by {WHO}: p99 latency doubled"
    cond = {c["type"]: c for c in st["conditions"]}["Promoted"]
    assert cond["status"] == "False" and "p99 latency doubled" in cond["message"]
    assert st["ledger"][-1]["action"] == f"command: abort by {WHO}"
    assert routed(api_client, namespace, NAME, (100, 0)) == (100, 0)
    # the annotation is cleared after the decision's effects and notifications
    ops.wait_until(lambda: "canary.dev/abort" not in annotations(api_client, namespace), 15, "the abort cleared")
    # Events follow the written decision (sent in the background): wait for them
    def told():
        evs = events(api_client, namespace)
        return (any(e.type == "Warning" and e.reason == "Rollback" and "p99 latency doubled" in e.message for e in evs)
                and any(e.reason == "CommandApplied" and f"abort by {WHO}" in e.message for e in evs))

    ops.wait_until(told, 15, "the Rollback and CommandApplied events")
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1, (out, err)

    # the failed revision is not retried by itself ...
    time.sleep(5)
    assert phase(api_client, namespace, NAME) == "Failed"
    # ... retry runs it again, with no change to the Deployment
    result = canary_cli("retry", NAME, "-n", namespace, "--reason", "dependency fixed")
    assert result.returncode == 0, result.stderr
    # the pending retry annotation keeps --wait from taking the old Failed for the outcome
    waiter = background("status", NAME, "-n", namespace, "--wait", "--timeout", "150")
    wait_phase(api_client, namespace, NAME, {"Progressing"}, 30, operator)
    wait_phase(api_client, namespace, NAME, {"Succeeded", "Failed"}, 120, operator)
    assert phase(api_client, namespace, NAME) == "Succeeded"
    assert _apps(api_client).read_namespaced_deployment(NAME, namespace).spec.template.to_dict() == template
    primary = _apps(api_client).read_namespaced_deployment(f"{NAME}-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    actions = ledger_actions(api_client, namespace)
    assert f"command: retry by {WHO}" in actions and actions[-1] == "complete"
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, (out, err)
    # retry on a Succeeded canary is refused by the CLI
    result = canary_cli("retry", NAME, "-n", namespace)
    assert result.returncode == 1 and "applies to a Failed canary" in result.stderr


def test_pause_holds_then_resume_continues(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=50, step_weight=10, interval="2s")
    release(api_client, namespace)
    weight_at_least(api_client, namespace, 10)
    result = canary_cli("pause", NAME, "-n", namespace, "--reason", "checking logs", "--wait")
    assert result.returncode == 0, (result.stdout, result.stderr)
    time.sleep(1)
    held_obj = ops.get_canary(api_client, namespace, NAME)
    held = held_obj["status"]
    assert held["paused"]["reason"] == "checking logs" and held["phase"] == "Progressing"
    routes = vs_weights(api_client, namespace, NAME)
    assert routes == (100 - held["canaryWeight"], held["canaryWeight"])
    time.sleep(10)  # five intervals
    # held ticks decide nothing: not a single write to the Canary
    assert ops.get_canary(api_client, namespace, NAME)["metadata"]["resourceVersion"] == \
        held_obj["metadata"]["resourceVersion"]
    st = status(api_client, namespace)
    assert st["canaryWeight"] == held["canaryWeight"] and st["phase"] == "Progressing"
    assert st.get("lastStepTime") == held.get("lastStepTime")
    assert routed(api_client, namespace, NAME, routes) == routes
    assert "canary.dev/pause" in annotations(api_client, namespace)  # stays until removed
    shown = canary_cli("status", NAME, "-n", namespace)
    assert "Progressing (paused)" in shown.stdout and "paused by user: checking logs" in shown.stdout
    timed_out = canary_cli("status", NAME, "-n", namespace, "--wait", "--timeout", "3")
    assert timed_out.returncode == 124, (timed_out.stdout, timed_out.stderr)
    result = canary_cli("resume", NAME, "-n", namespace)
    assert result.returncode == 0, result.stderr
    wait_phase(api_client, namespace, NAME, {"Succeeded", "Failed"}, 90, operator)
    st = status(api_client, namespace)
    assert st["phase"] == "Succeeded" and "paused" not in st
    assert not {"canary.dev/pause", "canary.dev/resume"} & set(annotations(api_client, namespace))
    actions = [e["action"] for e in st["ledger"]]
    assert f"command: pause by {WHO}" in actions and f"command: resume by {WHO}" in actions


def test_set_weight_routes_the_weight(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, max_weight=50, step_weight=10, interval="6s")
    release(api_client, namespace)
    weight_at_least(api_client, namespace, 10)
    result = canary_cli("set-weight", NAME, "40", "-n", namespace)
    assert result.returncode == 0, result.stderr
    ops.wait_until(lambda: vs_weights(api_client, namespace, NAME) == (60, 40), 5, "the VirtualService at 60/40")
    assert status(api_client, namespace)["canaryWeight"] == 40
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        st = status(api_client, namespace)
        seen.append(st.get("canaryWeight", 0))
        if st.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    assert status(api_client, namespace)["phase"] == "Succeeded"
    before_promotion = [w for w in seen if w]
    assert before_promotion and min(before_promotion) >= 40 and 50 in before_promotion  # continued from 40
    entry = next(e for e in status(api_client, namespace)["ledger"] if e["action"].startswith("command: set-weight"))
    assert entry["weight"] == 40 and entry["message"] == "canary weight 10 -> 40"
    # out of range is refused by the CLI (and would be rejected by the operator)
    result = canary_cli("set-weight", NAME, "70", "-n", namespace)
    assert result.returncode == 1


def test_explain_and_wait_after_a_metric_rollback(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator, threshold=2, max_weight=50, step_weight=25)
    waiter = background("status", NAME, "-n", namespace, "--wait", "--timeout", "150")
    release(api_client, namespace, **{"sim.canary.dev/error-rate": "0.5"})
    wait_phase(api_client, namespace, NAME, {"Failed", "Succeeded"}, 120, operator)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1, (out, err)
    assert "Failed" in out and "request-success-rate" in out
    result = canary_cli("explain", NAME, "-n", namespace)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    why = next(line for line in text.splitlines() if line.startswith("Why: "))
    assert "rolled back" in why and "by operator" in why and "check request-success-rate (value " in why
    assert "< 99" in why
    assert "check request-success-rate" in text and "(min 99) FAILED" in text
    doc = json.loads(canary_cli("explain", NAME, "-n", namespace, "-o", "json").stdout)
    assert doc["lastFailure"]["check"] == "request-success-rate" and doc["lastFailure"]["value"] < 99
    rollback = doc["decidedBy"]
    assert rollback["action"] == "rollback"
    check = next(c for c in rollback["checks"] if c["name"] == "request-success-rate")
    assert check["ok"] is False and check["min"] == 99 and "istio_requests_total" in check["query"]
    # the table view shows it too
    table = canary_cli("get", "-n", namespace).stdout
    assert "Failed" in table and "request-success-rate" in table


def test_commands_out_of_phase_are_rejected_and_cleared(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator)
    # as `kubectl annotate canary podinfo canary.dev/promote=now` would
    body = {"metadata": {"annotations": {"canary.dev/promote": "now"}}}
    kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "canary.dev", "v1beta1", namespace, "canaries", NAME, body)
    ops.wait_until(lambda: "canary.dev/promote" not in annotations(api_client, namespace), 20, "the annotation cleared")
    st = status(api_client, namespace)
    assert st["phase"] == "Initialized"
    assert st["lastCommand"]["result"] == "Rejected" and "nothing to promote" in st["lastCommand"]["message"]
    assert st["ledger"][-1]["action"] == "rejected: promote by unknown"
    warnings = ops.wait_until(lambda: [e for e in events(api_client, namespace)
                                       if e.type == "Warning" and e.reason == "CommandRejected"], 15, "a CommandRejected event")
    assert "nothing to promote" in warnings[0].message
    # the CLI refuses it up front, and sends it with --force
    result = canary_cli("abort", NAME, "-n", namespace)
    assert result.returncode == 1 and "nothing to abort" in result.stderr
    result = canary_cli("abort", NAME, "-n", namespace, "--force", "--wait", "--timeout", "20")
    assert result.returncode == 1 and result.stdout.splitlines()[-1].startswith("rejected:")


def test_cli_errors(api_client, namespace, operator, tmp_path):
    name = f"only-in-{namespace}"[:50]  # a name no other test uses
    setup_canary(api_client, namespace, name=name, operator=operator)
    result = canary_cli("status", "nope", "-n", namespace)
    assert result.returncode == 3 and f'canary "nope" not found in namespace "{namespace}"' in result.stderr
    result = canary_cli("explain", name, "-n", "default")
    assert result.returncode == 3
    assert result.stderr.strip() == (f'error: canary "{name}" not found in namespace "default"; '
                                     f'it exists in namespace {namespace} (use -n {namespace})')
    dead = tmp_path / "kubeconfig"
    dead.write_text(cluster.paths().kubeconfig("admin").read_text().replace(
        ops.api_client().configuration.host, "https://127.0.0.1:1"))
    result = subprocess.run([sys.executable, "-m", "canary.cli", "--kubeconfig", str(dead), "status", "-A"],
                            capture_output=True, text=True, timeout=60, cwd=str(ops.REPO))
    assert result.returncode == 3 and "cannot reach the Kubernetes API server at https://127.0.0.1:1" in result.stderr
