"""One Kubernetes Event per waiting period, through the operator process on the real API server:
a confirm-rollout gate kept closed for many intervals is one WaitingApproval Event whose count
grows, not one Event per interval (before: one per interval, about 900 a night at 1m)."""

from __future__ import annotations

import time

import kubernetes
import pytest

from testbed import ops
from tests.e2e.test_operator import setup_canary, wait_phase

pytestmark = pytest.mark.testbed

IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"


def waiting_events(api_client, ns: str) -> list:
    items = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(
        ns, field_selector="involvedObject.name=podinfo").items
    return [e for e in items if e.reason == "WaitingApproval" and e.involved_object.kind == "Canary"]


def test_a_closed_gate_is_one_event_with_a_count(api_client, namespace, operator, hooks):
    gate = [{"name": "approve", "type": "confirm-rollout", "url": f"{hooks.url}/gate/approve"}]
    setup_canary(api_client, namespace, operator=operator, interval="1s", webhooks=gate)
    ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2)
    wait_phase(api_client, namespace, "podinfo", {"Waiting"}, 30, operator)
    ops.wait_until(lambda: sum(e.count or 1 for e in waiting_events(api_client, namespace)) >= 6, 30,
                   "six intervals with the gate closed")
    polls = len(hooks.paths("/gate/approve"))
    evs = waiting_events(api_client, namespace)
    assert len(evs) == 1, [(e.metadata.name, e.count) for e in evs]
    (ev,) = evs
    assert ev.count >= 6 and polls >= ev.count  # one count per refused poll, one Event in all
    assert ev.last_timestamp > ev.first_timestamp
    hooks.open.add("approve")
    wait_phase(api_client, namespace, "podinfo", {"Progressing", "Succeeded"}, 30, operator)
    time.sleep(1)
    assert len(waiting_events(api_client, namespace)) == 1
