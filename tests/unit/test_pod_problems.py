"""The first failing pod's reason in the readiness message (Flagger #1533): read from the pods of
a Deployment that is not ready, cleaned and bounded, and carried by the engine into the
progress-deadline message, its Warning Event and its alert."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from canary import cluster
from canary.adapters.notifiers import describe, generic_payload
from canary.adapters.workload import pods as pods_module
from canary.adapters.workload.pods import MAX_PROBLEM, first_pod_problem, label_selector, pod_problem
from canary.types import Phase, Readiness, Ready, WorkloadState
from tests.unit.test_engine import released_world

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
IMAGE = "ghcr.io/stefanprodan/podinfo:nope"


def pod(name: str = "podinfo-5d8f9c-x2k", rs: str = "podinfo-5d8f9c", created: str = "2026-03-01T11:00:00Z",
        ready: bool = False, phase: str = "Pending", containers: list[dict] | None = None, **extra: Any) -> dict:
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True" if ready else "False"},
    ], "containerStatuses": containers if containers is not None else []}
    status.update(extra)
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}]},
            "status": status}


def waiting(reason: str, message: str = "", name: str = "app", restarts: int = 0, last: dict | None = None) -> dict:
    return {"name": name, "ready": False, "restartCount": restarts,
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {"terminated": last} if last else {}}


def running(name: str = "app", ready: bool = False) -> dict:
    return {"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": "x"}}}


PULL = waiting("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')


def test_image_pull_back_off():
    got = first_pod_problem([pod(containers=[PULL])], "podinfo")
    assert got == f'pod podinfo-5d8f9c-x2k: container app: ImagePullBackOff: Back-off pulling image "{IMAGE}"'


def test_err_image_pull_and_crash_loop_with_its_last_exit():
    assert "ErrImagePull: rpc error: not found" in first_pod_problem(
        [pod(containers=[waiting("ErrImagePull", "rpc error: not found")])], "podinfo")
    crash = waiting("CrashLoopBackOff", "back-off 20s restarting failed container=app", restarts=3,
                    last={"exitCode": 1, "reason": "Error"})
    got = first_pod_problem([pod(phase="Running", containers=[crash])], "podinfo")
    assert got == ("pod podinfo-5d8f9c-x2k: container app: CrashLoopBackOff: back-off 20s restarting failed "
                   "container=app (restarted 3 times, last exit code 1)")


def test_unready_container_and_failed_init_container():
    got = first_pod_problem([pod(phase="Running", containers=[running(), running("sidecar", ready=True)])], "podinfo")
    assert got == "pod podinfo-5d8f9c-x2k: container app is running but not ready"
    init = {"name": "migrate", "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": "no db"}}}
    got = first_pod_problem([pod(containers=[], initContainerStatuses=[init])], "podinfo")
    assert got == "pod podinfo-5d8f9c-x2k: init container migrate: Error: no db (exit code 2)"


def test_unschedulable_and_evicted_pods():
    unsched = pod(containers=[])
    unsched["status"]["conditions"][0] = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available: 3 Insufficient cpu."}
    assert first_pod_problem([unsched], "podinfo").endswith("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert first_pod_problem([evicted], "podinfo").endswith("Evicted: The node was low on resource: memory.")


def test_what_is_not_a_failure():
    starting = waiting("ContainerCreating")
    assert first_pod_problem([pod(containers=[starting])], "podinfo") is None
    assert first_pod_problem([pod(ready=True, phase="Running", containers=[running(ready=True)])], "podinfo") is None
    # another Deployment's pods (the primary's ReplicaSet is podinfo-primary-<hash>), terminating pods
    assert first_pod_problem([pod(rs="podinfo-primary-7c9d", containers=[PULL])], "podinfo") is None
    gone = pod(containers=[PULL])
    gone["metadata"]["deletionTimestamp"] = "2026-03-01T11:59:00Z"
    assert first_pod_problem([gone], "podinfo") is None
    assert first_pod_problem([pod(rs="podinfo-primary-7c9d", containers=[PULL])], "podinfo-primary") is not None
    assert first_pod_problem([], "podinfo") is None


def test_the_first_failing_pod_a_failure_before_an_unready_one():
    older_unready = pod("podinfo-a", created="2026-03-01T10:00:00Z", phase="Running", containers=[running()])
    newer_pull = pod("podinfo-b", created="2026-03-01T11:00:00Z", containers=[PULL])
    newest_pull = pod("podinfo-c", created="2026-03-01T11:30:00Z", containers=[PULL])
    got = first_pod_problem([newest_pull, older_unready, newer_pull], "podinfo")
    assert got.startswith("pod podinfo-b: container app: ImagePullBackOff") and got.endswith("(2 more pods not ready)")


def test_a_hostile_message_is_cleaned_and_bounded():
    evil = "\x1b]52;c;aGk=\x07<https://evil.example|Approve>\x1b[31m\nline2\t" + "x" * 5000
    got = first_pod_problem([pod(containers=[waiting("CrashLoopBackOff", evil, name="app\x07")])], "podinfo")
    assert "\x1b" not in got and "\x07" not in got and "\n" not in got and "\t" not in got
    assert len(got) <= MAX_PROBLEM and "<https://evil.example|Approve> line2" in got
    # the chat providers escape it for their markup as for any other text
    body = generic_payload(describe_failure(got))
    assert got in body["message"]


def test_label_selector():
    assert label_selector({"spec": {"selector": {"matchLabels": {"app": "podinfo", "tier": "web"}}}}) == \
        "app=podinfo,tier=web"
    exprs = [{"key": "track", "operator": "In", "values": ["a", "b"]}, {"key": "x", "operator": "Exists"},
             {"key": "y", "operator": "DoesNotExist"}, {"key": "z", "operator": "NotIn", "values": ["c"]}]
    assert label_selector({"spec": {"selector": {"matchLabels": {"app": "p"}, "matchExpressions": exprs}}}) == \
        "app=p,track in (a,b),x,!y,z notin (c)"
    assert label_selector({"spec": {"selector": {}}}) is None
    assert label_selector({"spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "Odd"}]}}}) is None


# ---- the observation: pods are read only for a Deployment that is not ready ------------------


class PodKube:
    def __init__(self, pods: list[dict], fail: bool = False, hang: bool = False):
        self.pods, self.fail, self.hang = pods, fail, hang
        self.lists: list[tuple] = []
        self.versions: list[str | None] = []

    async def list(self, api_version, plural, namespace=None, label_selector=None, resource_version=None):
        self.lists.append((api_version, plural, namespace, label_selector))
        self.versions.append(resource_version)
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise RuntimeError("forbidden")
        return self.pods


UNAVAILABLE_SINCE = "2026-03-01T11:59:50Z"  # 10 s before CLOCK


def CLOCK():
    return datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def deployment(name: str = "podinfo", replicas: int = 1, unavailable_since: str | None = UNAVAILABLE_SINCE) -> dict:
    status: dict = {}
    if unavailable_since:
        status["conditions"] = [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                                 "lastTransitionTime": unavailable_since}]
    return {"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
            "status": status}


def state(ready: Ready, message: str = "waiting for rollout to finish: 0 of 1 updated replicas are available"):
    return WorkloadState(name="podinfo", readiness=Readiness(ready, message), replicas=1)


async def test_a_deployment_that_is_not_ready_gets_its_pods_reason():
    kube = PodKube([pod(containers=[PULL])])
    deps = SimpleNamespace(kube=kube, clock=CLOCK)
    got = await cluster._with_pod_problem(deps, "shop", state(Ready.WAITING), deployment())
    assert got.readiness.state is Ready.WAITING
    assert got.readiness.message == ("waiting for rollout to finish: 0 of 1 updated replicas are available; pod "
                                     f'podinfo-5d8f9c-x2k: container app: ImagePullBackOff: Back-off pulling image "{IMAGE}"')
    assert kube.lists == [("v1", "pods", "shop", "app=podinfo")]  # in the Canary's namespace only


async def test_no_pod_read_in_steady_state_nor_for_no_pods():
    kube = PodKube([pod(containers=[PULL])])
    deps = SimpleNamespace(kube=kube, clock=CLOCK)
    ready = state(Ready.READY, "1 of 1 replicas available")
    assert await cluster._with_pod_problem(deps, "shop", ready, deployment()) is ready
    assert await cluster._with_pod_problem(deps, "shop", None, None) is None
    zero = state(Ready.WAITING, "podinfo-primary is scaled to zero")
    assert await cluster._with_pod_problem(deps, "shop", zero, deployment(replicas=0)) is zero
    assert kube.lists == []


async def test_pods_starting_normally_are_not_listed():
    """A scale-up is unready for a moment on every release: no pod LIST before the Deployment has
    been unavailable for POD_REASON_AFTER seconds (the benchmark counted 4 LISTs per release)."""
    kube = PodKube([pod(containers=[PULL])])
    deps = SimpleNamespace(kube=kube, clock=CLOCK)
    waiting = state(Ready.WAITING)
    assert await cluster._with_pod_problem(deps, "shop", waiting, deployment(unavailable_since="2026-03-01T11:59:58Z")) \
        is waiting
    assert await cluster._with_pod_problem(deps, "shop", waiting, deployment(unavailable_since=None)) is waiting
    assert kube.lists == []
    got = await cluster._with_pod_problem(deps, "shop", waiting, deployment())
    assert "ImagePullBackOff" in got.readiness.message and len(kube.lists) == 1


async def test_the_pod_list_is_served_from_the_watch_cache_and_bounded(monkeypatch):
    """At 1,000 Canaries a quorum LIST of the namespace's pods took 20 s (p99 30 s, 685 of them
    in one release wave), and the tick held its slot all that time: the LIST asks for
    resourceVersion 0, and a slow one leaves the message without the detail."""
    kube = PodKube([pod(containers=[PULL])])
    assert "ImagePullBackOff" in await pod_problem(kube, "shop", deployment())
    assert kube.versions == ["0"]
    monkeypatch.setattr(pods_module, "POD_LIST_TIMEOUT", 0.05)
    slow = PodKube([pod(containers=[PULL])], hang=True)
    started = asyncio.get_running_loop().time()
    assert await pod_problem(slow, "shop", deployment()) is None
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_unreadable_pods_leave_the_message_as_it_was():
    deps = SimpleNamespace(kube=PodKube([], fail=True), clock=CLOCK)
    waiting_state = state(Ready.WAITING)
    assert await cluster._with_pod_problem(deps, "shop", waiting_state, deployment()) is waiting_state
    assert await pod_problem(PodKube([pod(containers=[running(ready=True)], ready=True)]), "shop", deployment()) is None


# ---- the engine carries it to the deadline message, the Event and the alert ----------------------


def describe_failure(reason: str):
    world = released_world({"stepWeight": 10}, progressDeadlineSeconds=60)
    world.target_state = Ready.WAITING
    world.readiness_message = f"waiting for rollout to finish: 0 of 1 updated replicas are available; {reason}"
    world.run_to(Phase.FAILED)
    (alert,) = [a for a in world.alerts("error") if "Progress deadline exceeded" in a.message]
    canary = world.canary.model_copy(update={"status": world.status})
    return describe(canary, alert, now=NOW)


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "CrashLoopBackOff"])
def test_the_deadline_message_event_and_alert_name_the_pods_reason(reason):
    problem = f"pod podinfo-5d8f9c-x2k: container app: {reason}: the detail"
    world = released_world({"stepWeight": 10}, progressDeadlineSeconds=60)
    world.target_state = Ready.WAITING
    world.readiness_message = f"waiting for rollout to finish: 0 of 1 updated replicas are available; {problem}"
    world.run_to(Phase.FAILED)
    assert problem in world.promoted_condition().message
    assert problem in world.status.last_failure.message
    (rollback,) = world.events("Rollback")
    assert rollback.type == "Warning" and problem in rollback.message
    assert [a for a in world.alerts("error") if problem in a.message]
    info = describe_failure(problem)
    assert problem in info.message and info.check == "progress-deadline"
