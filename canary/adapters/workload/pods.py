"""Why a Deployment is not ready: the first failing pod's reason (Flagger #1533).

A release stuck on an image that cannot be pulled or a container that crashes at start only says
"0 of 1 updated replicas are available" in the Deployment's status; the reason is in its pods.
:func:`pod_problem` reads the pods of a Deployment that is not ready (one LIST, in the
Canary's namespace, only then: nothing in steady state) and :func:`first_pod_problem` (pure)
names the first failing one, e.g. ``pod podinfo-5d8f9-x2k: container app: ImagePullBackOff:
Back-off pulling image "ghcr.io/x/podinfo:nope"``. The observation appends it to the
readiness message, so the progress-deadline message, its Warning Event and its alert say it.

The container's message comes from the kubelet but carries tenant-chosen text (the image name,
a command's output), and it reaches chat rooms: control characters and escape sequences are
removed, and the text is bounded (:data:`MAX_MESSAGE`, :data:`MAX_PROBLEM`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from canary.text import snippet

__all__ = ["MAX_MESSAGE", "MAX_PROBLEM", "first_pod_problem", "label_selector", "pod_problem"]

log = logging.getLogger("canary.adapters.workload")

MAX_MESSAGE = 200  # characters of a container's own message
MAX_PROBLEM = 400  # characters of the whole text
POD_LIST_TIMEOUT = 3.0
"""Seconds the pod LIST may take before the message goes without the pod's reason."""
# waiting reasons of a container that is on its way: not a failure (yet)
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def _owned_by(pod: Mapping[str, Any], deployment: str) -> bool:
    """Controlled by a ReplicaSet of the Deployment (<deployment>-<pod-template-hash>)."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller"):
            return str(ref.get("name") or "").rsplit("-", 1)[0] == deployment
    return False


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _with_message(reason: str, message: Any) -> str:
    message = snippet(str(message or ""), MAX_MESSAGE)
    return f"{reason}: {message}" if message else reason


def _container_problem(cs: Mapping[str, Any], init: bool) -> tuple[int, str] | None:
    """(rank, text) of one container status: 0 a failure, 1 merely not ready; None: fine."""
    name = snippet(str(cs.get("name") or "?"), 63)
    what = f"init container {name}" if init else f"container {name}"
    state = cs.get("state") or {}
    restarts = int(cs.get("restartCount") or 0)
    last = (cs.get("lastState") or {}).get("terminated") or {}
    last_exit = (f" (restarted {restarts} times, last exit code {last.get('exitCode')})"
                 if restarts and last else "")
    waiting = state.get("waiting")
    if isinstance(waiting, Mapping) and waiting.get("reason") and waiting["reason"] not in _STARTING:
        return 0, f"{what}: {_with_message(str(waiting['reason']), waiting.get('message'))}{last_exit}"
    terminated = state.get("terminated")
    if isinstance(terminated, Mapping) and int(terminated.get("exitCode") or 0) != 0:
        reason = str(terminated.get("reason") or "Error")
        return 0, f"{what}: {_with_message(reason, terminated.get('message'))} (exit code {terminated.get('exitCode')})"
    if not init and state.get("running") is not None and not cs.get("ready"):
        return 1, f"{what} is running but not ready{last_exit}"
    return None


def _pod_problem(pod: Mapping[str, Any]) -> tuple[int, str] | None:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return 0, _with_message(str(status.get("reason") or "Failed"), status.get("message"))
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return 0, _with_message(str(cond.get("reason") or "Unschedulable"), cond.get("message"))
    found: list[tuple[int, str]] = []
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for cs in status.get(key) or []:
            if isinstance(cs, Mapping):
                got = _container_problem(cs, init)
                if got is not None:
                    found.append(got)
    return min(found, key=lambda f: f[0]) if found else None


def first_pod_problem(pods: Iterable[Mapping[str, Any]], deployment: str) -> str | None:
    """The reason of the first failing pod of `deployment` (oldest first; a failure such as
    ImagePullBackOff before a container that merely is not ready), or None."""
    failing: list[tuple[int, str, str, str]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not _owned_by(pod, deployment) or _ready(pod):
            continue
        got = _pod_problem(pod)
        if got is not None:
            failing.append((got[0], str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "?"), got[1]))
    if not failing:
        return None
    failing.sort()
    rank, _, name, text = failing[0]
    more = f" ({len(failing) - 1} more pods not ready)" if len(failing) > 1 else ""
    return snippet(f"pod {name}: {text}{more}", MAX_PROBLEM)


def label_selector(deployment: Mapping[str, Any]) -> str | None:
    """The Deployment's spec.selector as a labelSelector query; None if it selects nothing usable."""
    selector = (deployment.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if not key:
            return None
        if op in ("In", "NotIn") and values:
            parts.append(f"{key} {op.lower()} ({','.join(str(v) for v in values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            return None
    return ",".join(parts) or None


async def pod_problem(kube: Any, namespace: str, deployment: Mapping[str, Any] | None) -> str | None:
    """The first failing pod's reason of a Deployment that has pods; None when there is none or
    the pods cannot be read (this only adds detail to a message: it never fails a tick)."""
    if not deployment or int((deployment.get("spec") or {}).get("replicas", 1) or 0) == 0:
        return None
    selector = label_selector(deployment)
    name = str((deployment.get("metadata") or {}).get("name") or "")
    if selector is None or not name:
        return None
    try:
        # from the API server's watch cache (a quorum LIST of a namespace of 3,000 pods took
        # 20 s at 1,000 Canaries), and bounded: this detail must not stretch a tick
        pods = await asyncio.wait_for(kube.list("v1", "pods", namespace, label_selector=selector,
                                                resource_version="0"), POD_LIST_TIMEOUT)
    except Exception as exc:  # missing rights, a timeout: the message stays without the detail
        log.debug("cannot list the pods of %s/%s: %s", namespace, name, type(exc).__name__)
        return None
    return first_pod_problem(pods, name)
