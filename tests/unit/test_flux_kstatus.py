"""How Flux's Kustomization health checks (kstatus) see a Canary, on statuses the real engine wrote.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute) decides a custom resource's status from
generic properties only: a deletionTimestamp (Terminating), metadata.generation against
status.observedGeneration (InProgress), a Reconciling=True (InProgress) or Stalled=True (Failed)
condition; anything else is Current. `kstatus_compute` below follows those rules for kinds
kstatus has no built-in rules for, as our Canary. docs/gitops.md states the consequences this
test checks: our status carries observedGeneration and a Flagger-style `Promoted` condition,
neither Reconciling nor Stalled, so Flux sees a Canary as Current (healthy) as soon as the
operator has observed its generation, whatever the release does.
"""

from __future__ import annotations

from tests.unit.test_argocd import Cluster

from canary.types import Phase


def kstatus_compute(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating", "Resource scheduled for deletion"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress", f"{obj.get('kind')} generation is {generation}, but latest observed generation is {observed}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return "InProgress", cond.get("message", "")
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return "Failed", cond.get("message", "")
    return "Current", "Resource is current"


def test_kstatus_sees_every_phase_as_current_once_the_generation_is_observed() -> None:
    c = Cluster({"metrics": {"request-success-rate": [100, 100, 42]}})
    objs = c.run(20, until=Phase.INITIALIZED)
    c.revision = "release"
    objs += c.run(40, until=Phase.FAILED)
    phases = {o["status"]["phase"] for o in objs}
    assert {"Initializing", "Initialized", "Progressing", "Failed"} <= phases
    for o in objs:
        assert {c["type"] for c in o["status"].get("conditions", [])} == {"Promoted"}
        assert kstatus_compute(o) == ("Current", "Resource is current"), o["status"]["phase"]


def test_kstatus_waits_only_for_the_operator_to_observe_a_spec_change() -> None:
    c = Cluster()
    c.run(20, until=Phase.INITIALIZED)
    obj = c.obj()
    obj["metadata"]["generation"] = 2
    assert kstatus_compute(obj)[0] == "InProgress"
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert kstatus_compute(obj)[0] == "Terminating"


def test_the_rules_would_follow_reconciling_and_stalled_conditions() -> None:
    """What an engine writing kstatus conditions would get (docs/gitops.md, 'What would change it')."""
    base = {"kind": "Canary", "metadata": {"generation": 1}, "status": {"observedGeneration": 1}}
    running = {**base, "status": {**base["status"], "conditions": [
        {"type": "Reconciling", "status": "True", "message": "analysis at weight 20"}]}}
    failed = {**base, "status": {**base["status"], "conditions": [
        {"type": "Stalled", "status": "True", "message": "rolled back"}]}}
    assert kstatus_compute(running) == ("InProgress", "analysis at weight 20")
    assert kstatus_compute(failed) == ("Failed", "rolled back")
