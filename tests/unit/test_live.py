"""The live view (`get NAME --watch`) drawn from what the watches saw, and `status --wait`'s
lines and heartbeats when stdout is not a terminal."""

from __future__ import annotations

import io
from datetime import timedelta

from rich.console import Console
from rich.text import Text

from canary.cli.live import lines
from canary.cli.store import Store, pod_problem
from canary.cli.views import View
from canary.cli.watch import Change
from tests.unit.test_cli import DUR_OK, NOW, SR_BAD, SR_OK, FakeApi, canary, ledger_entry, run


def pod(name: str, app: str, reason: str | None = None, ready: bool = True) -> dict:
    status: dict = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if reason:
        status["containerStatuses"] = [{"name": "app", "state": {"waiting": {"reason": reason}}}]
    return {"metadata": {"name": name, "namespace": "test", "labels": {"app": app}}, "status": status}


def deployment(name: str, image: str, replicas: int) -> dict:
    return {"metadata": {"name": name, "namespace": "test"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}


def store_with(obj: dict) -> Store:
    store = Store()
    store.apply(Change("canary", "ADDED", obj))
    store.apply(Change("deployment", "ADDED", deployment("podinfo", "podinfo:2", 2)))
    store.apply(Change("deployment", "ADDED", deployment("podinfo-primary", "podinfo:1", 2)))
    store.apply(Change("pod", "ADDED", pod("c1", "podinfo")))
    store.apply(Change("pod", "ADDED", pod("c2", "podinfo", "ImagePullBackOff")))
    store.apply(Change("pod", "ADDED", pod("p1", "podinfo-primary")))
    store.apply(Change("pod", "ADDED", pod("p2", "podinfo-primary", "CrashLoopBackOff")))
    return store


def test_pod_problems_as_kubectl_names_them():
    assert pod_problem(pod("a", "x", "ImagePullBackOff")) == "ImagePullBackOff"
    assert pod_problem(pod("a", "x", ready=False)) == "Unready"
    assert pod_problem(pod("a", "x")) is None
    assert pod_problem({"metadata": {}, "status": {"phase": "Pending"}}) == "Pending"


def test_the_view_of_a_progressing_canary():
    ledger = [ledger_entry(500, "advance 10", weight=10, checks=[SR_OK, DUR_OK]),
              ledger_entry(590, "halt", weight=20, checks=[SR_BAD, DUR_OK], message="request-success-rate 48.2 < 99")]
    obj = canary(weight=20, failedChecks=1, ledger=ledger, lastStepTime=(NOW - timedelta(seconds=4)).isoformat(),
                 waitingSince=None)
    obj["spec"]["analysis"]["webhooks"] = [{"name": "approve", "type": "confirm-promotion", "url": "http://g/"}]
    text = "\n".join(t for t, _ in lines(View.of(obj), store_with(obj), NOW, routed=20))
    assert "Status     ◐ Progressing" in text
    assert "Strategy   canary   STEP 2/5" in text
    assert "Weight     set 20, routed 20 / max 50" in text
    assert "Failed     1/2 checks" in text
    assert "Canary     podinfo:2   1/2 ready (1 ImagePullBackOff)" in text
    assert "Primary    podinfo:1   1/2 ready (1 CrashLoopBackOff)" in text
    assert "request-success-rate      48.2  min 99" in text and "FAILED" in text
    assert "next analysis in 6s (every 10s)" in text
    assert "Gates      approve (confirm-promotion): closed" in text
    assert "halt: request-success-rate 48.2 < 99" in text


def test_iterations_for_ab_and_blue_green_and_colours():
    obj = canary(phase="Failed", weight=0, iterations=4,
                 lastFailure={"time": "2026-03-01T09:59:00Z", "check": "x", "message": "bad"})
    obj["spec"]["analysis"].update({"iterations": 10})
    styled = lines(View.of(obj), store_with(obj), NOW)
    text = "\n".join(t for t, _ in styled)
    assert "ITER 4/10" in text and "✖ Failed" in text and "Failure    bad" in text
    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=120)
    console.print(*(Text(t, style=s) for t, s in styled))
    assert "\x1b[1;31m" in console.file.getvalue()  # bold red status


def test_wait_prints_changes_and_heartbeats_when_not_a_terminal():
    api = FakeApi(canary())
    api.script = [canary(), canary(weight=10)]  # the GET, then one change, then nothing
    code, out, _ = run(api, "status", "podinfo", "--wait", "--timeout", "95s")
    lines_ = out.splitlines()
    assert code == 124
    assert "weight 10/50" in lines_[0]
    beats = [line for line in lines_ if "(no change for 30s)" in line]
    assert len(beats) == 3 and all("Progressing" in b for b in beats)
    assert lines_[-1].startswith("timed out after 95s")


def test_watch_without_a_terminal_appends_lines():
    api = FakeApi(canary())
    api.script = [canary(), canary(weight=10), canary(weight=20), canary(phase="Succeeded", weight=0)]  # first: the GET
    code, out, _ = run(api, "get", "podinfo", "--watch", "--wait", "--timeout", "1m")
    assert code == 0 and len(out.splitlines()) == 3 and "\x1b" not in out
