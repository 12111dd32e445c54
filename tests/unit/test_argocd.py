"""Argo CD's health check and actions for Canaries (charts/canary-operator/files/argocd/), run by a
real Lua 5.1 (lupa; Argo CD's gopher-lua is 5.1) against statuses the real engine wrote, and
the actions' annotations fed back to the engine through the operator's own command parser."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.commands import parse_annotations
from canary.models import Canary
from canary.types import Phase
from canary.world import World, operator_verdict

lupa = pytest.importorskip("lupa.lua51", reason="lupa (the test extra) is not installed")

FILES = Path(__file__).resolve().parents[2] / "charts" / "canary-operator" / "files" / "argocd"
ACTIONS = ("promote", "abort", "retry", "pause", "resume")


# ---- running Argo CD's Lua ------------------------------------------------------------------------


def _to_lua(lua, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def _from_lua(value: Any) -> Any:
    if lupa.lua_type(value) == "table":
        items = dict(value.items())
        if items and all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
            return [_from_lua(items[i]) for i in range(1, len(items) + 1)]
        return {k: _from_lua(v) for k, v in items.items()}
    return value


def run_lua(script: str, obj: dict) -> Any:
    """What Argo CD does: the object as the global `obj`, the script's return value back."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, json.loads(json.dumps(obj)))
    return _from_lua(lua.execute(script))


def health(obj: dict) -> dict:
    return run_lua((FILES / "health.lua").read_text(), obj)


def discovery(obj: dict) -> dict[str, bool]:
    got = run_lua((FILES / "discovery.lua").read_text(), obj)
    return {name: bool(a.get("disabled")) for name, a in got.items()}


def action(name: str, obj: dict) -> dict:
    return run_lua((FILES / f"action-{name}.lua").read_text(), obj)


# ---- the real engine, with command annotations as the reconciler passes them ---------------------

SPEC: dict[str, Any] = {
    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
    "service": {"port": 9898},
    "analysis": {"interval": "1m", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
                 "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]},
}


class Cluster(World):
    """canary.world's World (the engine tests' and `canary simulate`'s), plus the Canary object
    Argo CD sees (metadata, annotations), whose command annotations reach the engine as the
    reconciler passes them."""

    def __init__(self, scenario: dict | None = None, **analysis: Any):
        scenario = scenario or {}
        spec = json.loads(json.dumps(SPEC))
        spec["analysis"].update(analysis)
        self.meta: dict[str, Any] = {"name": "podinfo", "namespace": "shop", "generation": 1, "annotations": {}}
        super().__init__(Canary.model_validate({"metadata": self.meta, "spec": spec}), revision="initial")
        self.replicas = 1
        self.measure = operator_verdict
        self.check_invariants = False
        self.hook_ok = dict(scenario.get("webhooks") or {})
        self.metric_values.update(scenario.get("metrics") or {})
        self._wake = 0.0

    def obj(self) -> dict:
        status = self.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        status["observedGeneration"] = self.meta["generation"]  # as the reconciler writes it
        return {"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": json.loads(json.dumps(self.meta)),
                "spec": {}, "status": status}

    def observe(self):  # type: ignore[override]
        return replace(super().observe(), commands=parse_annotations(self.meta["annotations"]))

    def step(self):
        decision = self.tick(self._wake)
        for key in decision.clear:  # the operator removes decided command annotations
            self.meta["annotations"].pop(key, None)
        self._wake = max(min(decision.wake_after, 60), 0.5)
        return decision

    def run(self, ticks: int, until: Phase | None = None) -> list[dict]:  # type: ignore[override]
        seen = []
        for _ in range(ticks):
            self.step()
            seen.append(self.obj())
            if until is not None and self.status.phase == until:
                break
        return seen

    def release(self) -> None:  # type: ignore[override]
        self.run(20, until=Phase.INITIALIZED)
        assert self.status.phase == Phase.INITIALIZED
        self.revision = "release"
        self.metric_steps = 0

    def apply_action(self, name: str) -> None:
        """An Argo CD user runs the action: the object it returns is written back."""
        assert discovery(self.obj())[name] is False, f"{name} is disabled in {self.status.phase.value}"
        self.meta = action(name, self.obj())["metadata"]


EXPECTED = {"Initializing": "Progressing", "Initialized": "Healthy", "Waiting": "Progressing",
            "Progressing": "Progressing", "WaitingPromotion": "Progressing", "Promoting": "Progressing",
            "Finalising": "Progressing", "Succeeded": "Healthy", "Failed": "Degraded"}


def test_health_through_a_whole_release() -> None:
    c = Cluster()
    objs = c.run(20, until=Phase.INITIALIZED)
    c.revision = "release"
    objs += c.run(40, until=Phase.SUCCEEDED)
    phases = [o["status"]["phase"] for o in objs]
    assert {"Initializing", "Initialized", "Progressing", "Promoting", "Finalising", "Succeeded"} <= set(phases)
    for o in objs:
        hs = health(o)
        assert hs["status"] == EXPECTED[o["status"]["phase"]], (o["status"]["phase"], hs)
        assert hs["message"]
    assert health(objs[-1])["message"].startswith("Canary analysis completed successfully")
    running = next(o for o in objs if o["status"]["phase"] == "Progressing" and o["status"]["canaryWeight"] > 0)
    assert f"(weight {running['status']['canaryWeight']}%)" in health(running)["message"]


def test_a_rollback_is_degraded_with_the_failure() -> None:
    c = Cluster({"metrics": {"request-success-rate": [100, 42]}})
    c.release()
    objs = c.run(30, until=Phase.FAILED)
    assert objs[-1]["status"]["phase"] == "Failed"
    hs = health(objs[-1])
    assert hs["status"] == "Degraded" and "request-success-rate" in hs["message"]


def test_a_closed_gate_is_progressing_and_says_waiting() -> None:
    c = Cluster({"webhooks": {"approve": False}},
                webhooks=[{"name": "approve", "type": "confirm-rollout", "url": "http://gate.shop/approve"}])
    c.release()
    objs = c.run(5)
    assert objs[-1]["status"]["phase"] == "Waiting"
    hs = health(objs[-1])
    assert hs["status"] == "Progressing" and hs["message"].startswith("Waiting")


def test_no_status_and_a_spec_the_operator_has_not_seen() -> None:
    assert health({"metadata": {"name": "x"}})["status"] == "Progressing"
    assert health({"metadata": {"name": "x"}, "status": {"phase": ""}})["status"] == "Progressing"
    c = Cluster()
    c.run(20, until=Phase.INITIALIZED)
    obj = c.obj()
    assert health(obj)["status"] == "Healthy"
    obj["metadata"]["generation"] = 2  # edited, not yet reconciled
    assert health(obj) == {"status": "Progressing", "message": "canary-operator has not seen generation 2 yet"}


def test_pause_and_resume_actions_hold_and_release_the_real_engine() -> None:
    c = Cluster()
    c.release()
    c.run(2)
    assert c.status.phase == Phase.PROGRESSING
    c.apply_action("pause")
    assert json.loads(c.meta["annotations"]["canary.dev/pause"])["by"] == "argocd"
    weight = c.status.canary_weight
    c.run(5)
    assert c.status.paused is not None and c.status.canary_weight == weight  # held
    assert health(c.obj())["status"] == "Suspended"
    d = discovery(c.obj())
    assert d["pause"] is True and d["resume"] is False and d["promote"] is True
    c.apply_action("resume")
    c.run(2)
    assert c.status.paused is None and "canary.dev/pause" not in c.meta["annotations"]
    assert c.status.last_command is not None and c.status.last_command.by == "argocd"
    objs = c.run(40, until=Phase.SUCCEEDED)
    assert health(objs[-1])["status"] == "Healthy"


def test_promote_action_skips_the_analysis() -> None:
    c = Cluster(maxWeight=50, stepWeight=5)
    c.release()
    c.run(2)
    c.apply_action("promote")
    objs = c.run(10, until=Phase.SUCCEEDED)
    assert c.status.phase == Phase.SUCCEEDED and len(objs) < 10
    assert c.status.last_command.name == "promote" and c.status.last_command.result == "Applied"
    assert "canary.dev/promote" not in c.meta["annotations"]  # decided and removed


def test_abort_then_retry_actions() -> None:
    c = Cluster()
    c.release()
    c.run(2)
    c.apply_action("abort")
    c.run(3, until=Phase.FAILED)
    assert c.status.phase == Phase.FAILED and c.status.last_failure.check == "abort"
    assert "argocd" in c.status.last_failure.message
    assert health(c.obj())["status"] == "Degraded"
    d = discovery(c.obj())
    assert d["retry"] is False and d["abort"] is True and d["promote"] is True
    c.apply_action("retry")
    c.run(3)
    assert c.status.phase == Phase.PROGRESSING
    assert c.status.last_command.name == "retry" and c.status.last_command.result == "Applied"


def test_every_action_is_a_new_command() -> None:
    """The value carries a timestamp, so the same action twice is two commands (two ids)."""
    obj = {"metadata": {"name": "x"}, "status": {"phase": "Failed"}}
    first = action("retry", obj)["metadata"]["annotations"]["canary.dev/retry"]
    value = json.loads(first)
    assert set(value) == {"at", "by", "reason"} and value["at"].endswith("Z")
    assert parse_annotations({"canary.dev/retry": first})[0].by == "argocd"
    for name in ACTIONS:
        assert f"canary.dev/{name}" in action(name, {"metadata": {"name": "x"}})["metadata"]["annotations"]


def test_the_argocd_cm_snippet_carries_these_scripts() -> None:
    doc = yaml.safe_load((FILES / "argocd-cm.yaml").read_text())
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "argocd-cm"
    data = doc["data"]
    assert data["resource.customizations.health.canary.dev_Canary"] == (FILES / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.canary.dev_Canary"])
    assert actions["discovery.lua"] == (FILES / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == \
        {a: (FILES / f"action-{a}.lua").read_text() for a in ACTIONS}
