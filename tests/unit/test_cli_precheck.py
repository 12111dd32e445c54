"""The CLI's precheck and the engine decide commands by the same rules: for states reached by
whole releases through the real engine, `canary <command>` accepts exactly what the engine
then applies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canary import commands
from canary.cli.control import precheck
from canary.cli.views import View
from canary.types import Phase
from tests.unit.test_cli import FakeApi, canary, run
from tests.unit.test_commands import CANARY, CommandWorld, progressing, world_for

GATE = {"name": "approve", "type": "confirm-rollout", "url": "http://gate/"}


def _paused(w: CommandWorld) -> CommandWorld:
    w.command("pause", reason="hold")
    w.tick(1)
    assert w.status.paused is not None
    return w


def _failed() -> CommandWorld:
    w = progressing()
    w.metric_value = 50.0
    w.run_to(Phase.FAILED)
    return w


def _failed_back_at_promoted() -> CommandWorld:
    w = _failed()
    w.release("rev1")  # the promoted revision
    w.tick(60)
    return w


def _waiting() -> CommandWorld:
    w = world_for({**CANARY, "webhooks": [GATE]})
    w.hook_ok["approve"] = False
    w.release("rev2")
    w.run_to(Phase.WAITING)
    return w


def _succeeded() -> CommandWorld:
    w = progressing()
    w.run_to(Phase.SUCCEEDED)
    return w


def _new() -> CommandWorld:
    return CommandWorld(world_for(CANARY).canary)


STATES = {
    "new": _new,
    "initialized": lambda: world_for(CANARY),
    "waiting": _waiting,
    "progressing": progressing,
    "failed": _failed,
    "failed-at-promoted": _failed_back_at_promoted,
    "succeeded": _succeeded,
    "paused-progressing": lambda: _paused(progressing()),
    "paused-failed": lambda: _paused(_failed()),
    "paused-initialized": lambda: _paused(world_for(CANARY)),
}
_BUILT: dict[str, CommandWorld] = {}


def state(name: str) -> CommandWorld:
    if name not in _BUILT:
        _BUILT[name] = STATES[name]()
    return copy.deepcopy(_BUILT[name])


def as_object(w: CommandWorld) -> dict[str, Any]:
    obj = w.canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    obj["metadata"]["annotations"] = dict(w.annotations)
    obj["status"] = w.status.dump()
    return obj


@pytest.mark.parametrize("name", sorted(STATES))
@pytest.mark.parametrize(("command", "weight"),
                         [("abort", None), ("retry", None), ("resume", None), ("pause", None),
                          ("set-weight", 30), ("set-weight", 70), ("promote", None)])
def test_the_cli_accepts_what_the_engine_applies(name, command, weight):
    w = state(name)
    accepted, text = precheck(command, View.of(as_object(w)), weight, revision=w.revision)
    w.command(command, weight=weight)
    cid = commands.command_id(command, w.annotations[commands.annotation(command)])
    for _ in range(3):  # a promote in Waiting starts the run first and is applied once the canary is ready
        w.tick(1)
        last = w.status.last_command
        if last is not None and last.id == cid and (last.result == "Rejected" or command != "promote"
                                                    or w.status.phase != Phase.PROGRESSING):
            break
    last = w.status.last_command
    decided = last.result if last is not None and last.id == cid else "not decided"
    if command == "promote" and accepted and decided == "not decided":
        decided = "Applied" if w.status.phase in (Phase.PROGRESSING, Phase.PROMOTING) else decided
    assert (decided == "Applied") == accepted, (name, command, weight, text, decided)
    if not accepted:
        assert last is not None and last.message == text  # the same words as the operator's


def test_pause_while_paused_is_accepted_as_the_engine_does():
    obj = canary(paused={"since": "2026-03-01T09:58:00Z", "by": "bob"})
    obj["metadata"]["annotations"]["canary.dev/pause"] = "x"
    api = FakeApi(obj)
    code, out, err = run(api, "pause", "podinfo", "--reason", "longer")
    assert code == 0 and api.patches and "holds the canary at weight 20" in out, err


def test_retry_of_the_promoted_revision_is_refused_as_the_engine_does():
    from tests.unit.test_cli import REV

    api = FakeApi(canary(phase="Failed", weight=0, lastPromotedSpec=REV))  # the target runs REV
    code, _, err = run(api, "retry", "podinfo")
    assert code == 1 and "runs the promoted revision" in err and not api.patches
