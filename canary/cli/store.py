"""What a watch has seen so far: Canaries, and the Deployments and Pods of their namespace;
and what the views read from them (images, ready pods, why pods fail)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from canary.cli.watch import Change

Key = tuple[str, str]
WAITING_REASONS = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
                   "InvalidImageName", "RunContainerError", "CreateContainerError")


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


@dataclass
class Pods:
    """The pods of one Deployment: desired and ready counts, and why the others are not."""

    image: str = ""
    desired: int = 0
    ready: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # reason -> pods

    def text(self) -> str:
        out = f"{self.ready}/{self.desired} ready"
        if self.problems:
            out += " (" + ", ".join(f"{n} {r}" for r, n in sorted(self.problems.items())) + ")"
        return out


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod is not ready, as kubectl shows it (ImagePullBackOff, CrashLoopBackOff, ...)."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for c in status.get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
        terminated = (c.get("state") or {}).get("terminated") or {}
        if terminated.get("reason"):
            return str(terminated["reason"])
    phase = status.get("phase") or "Pending"
    if phase != "Running":
        return str(phase)
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "Unready"
    return None


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Store:
    canaries: dict[Key, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def apply(self, change: Change) -> None:
        table = {"canary": self.canaries, "deployment": self.deployments, "pod": self.pods}[change.kind]
        key = _key(change.obj)
        if change.type == "DELETED":
            table.pop(key, None)
        else:
            table[key] = change.obj

    def canaries_sorted(self) -> list[dict[str, Any]]:
        return [self.canaries[k] for k in sorted(self.canaries)]

    def image(self, namespace: str, deployment: str) -> str:
        d = self.deployments.get((namespace, deployment))
        if d is None:
            return ""
        containers = (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        return ", ".join(str(c.get("image", "")) for c in containers[:2])

    def pods_of(self, namespace: str, deployment: str) -> Pods | None:
        d = self.deployments.get((namespace, deployment))
        if d is None:
            return None
        spec = d.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        out = Pods(image=self.image(namespace, deployment), desired=int(spec.get("replicas", 1) or 0))
        for (ns, _), pod in self.pods.items():
            if ns != namespace or not _matches(selector, (pod.get("metadata") or {}).get("labels") or {}):
                continue
            problem = pod_problem(pod)
            if problem is None:
                out.ready += 1
            else:
                out.problems[problem] = out.problems.get(problem, 0) + 1
        return out
