"""Which Canaries target which Deployment: one Deployment has one Canary (issue 10.3).

A second Canary on the same Deployment (with skipAnalysis, say) would promote past the first
one's analysis, so the first one keeps it and the others are refused. The index holds every
Canary of every shard (a rival may live in another replica's shard) and costs O(1) per event.
"""

from __future__ import annotations

from canary.models import Canary


class TargetIndex:
    def __init__(self) -> None:
        self._holders: dict[tuple[str, str], dict[str, str]] = {}  # (ns, target) -> Canary -> created
        self._target_of: dict[tuple[str, str], str] = {}  # (ns, Canary) -> its target

    def __len__(self) -> int:
        return len(self._target_of)

    def update(self, obj: dict, deleted: bool) -> None:
        """A Canary event (the raw object)."""
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        before = self._target_of.pop((ns, name), None)
        if before is not None:
            holders = self._holders.get((ns, before))
            if holders is not None:
                holders.pop(name, None)
                if not holders:
                    del self._holders[(ns, before)]
        target = ((obj.get("spec") or {}).get("targetRef") or {}).get("name")
        if target and not deleted:
            self._holders.setdefault((ns, target), {})[name] = str(meta.get("creationTimestamp") or "")
            self._target_of[(ns, name)] = target

    def rivals(self, canary: Canary) -> list[str]:
        """Other Canaries of the namespace that target the same Deployment and came first."""
        holders = self._holders.get((canary.namespace, canary.spec.target_ref.name)) or {}
        mine = (str(canary.metadata.get("creationTimestamp") or ""), canary.name)
        return sorted(n for n, created in holders.items() if n != canary.name and (created, n) < mine)
