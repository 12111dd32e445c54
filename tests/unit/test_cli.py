"""The `canary` CLI against a fake API: formatting, exit codes, annotations written, errors."""

from __future__ import annotations

import copy
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from canary import cli, commands
from canary.cli.watch import Change
from canary.revision import template_hash

NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
TEMPLATE = {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": [{"name": "app", "image": "podinfo:2"}]}}
REV = template_hash(TEMPLATE)


def deployment(template=TEMPLATE) -> dict:
    return {"metadata": {"name": "podinfo", "namespace": "test"}, "spec": {"template": template}}


def ledger_entry(t: int, action: str, phase: str = "Progressing", weight: int = 10, actor: str = "operator",
                 message: str | None = None, checks=None, **kw) -> dict:
    entry = {"time": (NOW - timedelta(seconds=600 - t)).strftime("%Y-%m-%dT%H:%M:%SZ"), "phase": phase,
             "weight": weight, "action": action, "actor": actor}
    if message:
        entry["message"] = message
    if checks:
        entry["checks"] = checks
    entry.update(kw)
    return entry


SR_OK = {"name": "request-success-rate", "query": "sum(rate(x[1m]))", "value": 99.95, "min": 99, "ok": True}
SR_BAD = {"name": "request-success-rate", "value": 48.2, "min": 99, "ok": False}
DUR_OK = {"name": "request-duration", "query": "histogram_quantile(0.99, y)", "value": 12, "max": 500, "ok": True}


def canary(name: str = "podinfo", namespace: str = "test", phase: str = "Progressing", weight: int = 20,
           **status) -> dict:
    st = {"phase": phase, "canaryWeight": weight, "failedChecks": 0, "iterations": 0,
          "lastAppliedSpec": REV, "lastPromotedSpec": "old", **status}
    return {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-03-01T09:00:00Z",
                     "generation": 1, "annotations": {}},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 50, "stepWeight": 10}},
        "status": st,
    }


class FakeApi:
    def __init__(self, *objs: dict, user: str = "alice", namespace: str = "test"):
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
        self.user = user
        self.namespace = namespace
        self.deployments = {("test", "podinfo"): deployment()}
        self.patches: list[tuple[str, str, dict]] = []
        self.script: list[dict] = []  # successive versions returned by get_canary (then the last)
        self.down = False
        self.clock: Clock | None = None  # the fake clock of run(), moved by idle watches
        self.watched = 0  # Canary versions a watch delivered

    def _check(self):
        if self.down:
            raise cli.CliError("cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused")

    def get_canary(self, namespace, name):
        self._check()
        if self.script and (namespace, name) == ("test", "podinfo"):
            obj = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            return copy.deepcopy(obj)
        if (namespace, name) not in self.objects:
            raise cli.NotFound(name)
        return copy.deepcopy(self.objects[(namespace, name)])

    def list_canaries(self, namespace):
        self._check()
        return [copy.deepcopy(o) for (ns, _), o in self.objects.items() if namespace is None or ns == namespace]

    def get_deployment(self, namespace, name):
        return copy.deepcopy(self.deployments.get((namespace, name)))

    def annotate(self, namespace, name, annotations):
        self._check()
        self.patches.append((namespace, name, annotations))
        obj = self.objects[(namespace, name)]
        for k, v in annotations.items():
            if v is None:
                obj["metadata"]["annotations"].pop(k, None)
            else:
                obj["metadata"]["annotations"][k] = v
        return copy.deepcopy(obj)


    def watch(self, namespace, name, related, idle):
        """The script's versions as changes (else the objects), then the Deployments; then
        nothing but idle periods, each moving the clock."""
        self._check()
        if self.script:
            versions, self.script = list(self.script), self.script[-1:]
        else:
            versions = [o for (ns, n), o in self.objects.items()
                        if (namespace is None or ns == namespace) and (name is None or n == name)]
        for obj in versions:
            self.watched += 1
            yield Change("canary", "MODIFIED", copy.deepcopy(obj))
        if related:
            for (ns, _), d in self.deployments.items():
                if ns == namespace:
                    yield Change("deployment", "ADDED", copy.deepcopy(d))
        while True:
            if self.clock is not None:
                self.clock.sleep(idle)
            yield None


class Clock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def run(api: FakeApi, *argv: str) -> tuple[int, str, str]:
    out, err, clock = io.StringIO(), io.StringIO(), Clock()
    api.clock = clock
    ctx = cli.Ctx(api_factory=lambda: api, out=out, err=err, clock=lambda: NOW, sleep=clock.sleep,
                  monotonic=clock.monotonic)
    code = cli.main(list(argv), ctx=ctx)
    return code, out.getvalue(), err.getvalue()


# ---- status / get --------------------------------------------------------------------------------


def test_status_one_line_per_canary():
    api = FakeApi(
        canary(ledger=[ledger_entry(590, "advance 20", weight=20, checks=[SR_OK, DUR_OK], message="canary weight 10 -> 20")]),
        canary("other", phase="Failed", weight=0, failedChecks=2,
               lastFailure={"time": "2026-03-01T09:59:00Z", "check": "request-success-rate", "value": 48.2,
                            "message": "request-success-rate 48.20 < 99"}),
    )
    code, out, _ = run(api, "status")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split() == ["NAME", "PHASE", "WEIGHT", "FAILED", "CHECKS", "AGE", "MESSAGE"]
    other, podinfo = lines[1], lines[2]
    assert "Failed" in other and "0/50" in other and "2/2" in other and "request-success-rate 48.20 < 99" in other
    assert podinfo.split()[:6] == ["podinfo", "Progressing", "20/50", "0/2",
                                   "request-success-rate=99.95,", "request-duration=12"]
    assert "60m" in podinfo and "advance 20: canary weight 10 -> 20" in podinfo


def test_get_all_namespaces_and_empty():
    api = FakeApi(canary(namespace="a"), canary(namespace="b", phase="Succeeded", weight=0))
    code, out, _ = run(api, "get", "-A")
    assert out.splitlines()[0].startswith("NAMESPACE") and len(out.splitlines()) == 3
    code, out, _ = run(FakeApi(), "status", "-n", "empty")
    assert code == 0 and out.strip() == 'No canaries found in namespace "empty".'


def test_status_shows_pause_and_failing_checks():
    api = FakeApi(canary(paused={"since": "2026-03-01T09:58:00Z", "by": "bob", "reason": "checking logs"},
                         ledger=[ledger_entry(1, "halt", checks=[SR_BAD])]))
    _, out, _ = run(api, "status", "podinfo")
    row = out.splitlines()[1]
    assert "Progressing (paused)" in row and "request-success-rate=48.2!" in row
    assert row.endswith("paused by bob: checking logs")


def test_status_json():
    api = FakeApi(canary())
    code, out, _ = run(api, "status", "podinfo", "-o", "json")
    assert code == 0 and json.loads(out)["status"]["phase"] == "Progressing"


@pytest.mark.parametrize(("final", "code"), [("Succeeded", 0), ("Failed", 1)])
def test_wait_exit_codes(final, code):
    api = FakeApi(canary())
    api.script = [canary(), canary(weight=30), canary(phase=final, weight=0)]
    result, out, _ = run(api, "status", "podinfo", "--wait", "--timeout", "60")
    assert result == code
    assert final in out


def test_wait_times_out_with_124():
    api = FakeApi(canary())
    code, out, _ = run(api, "status", "podinfo", "--wait", "--timeout", "5s")
    assert code == 124 and "timed out after 5s" in out and "Progressing" in out


def test_wait_ignores_an_old_outcome_until_the_new_revision_is_picked_up():
    old = canary(phase="Succeeded", weight=0, lastAppliedSpec="previous", lastPromotedSpec="previous")
    api = FakeApi(old)
    api.script = [old, old, canary(phase="Progressing"), canary(phase="Succeeded", weight=0)]
    code, out, _ = run(api, "status", "podinfo", "--wait", "--timeout", "60")
    assert code == 0 and api.watched == 3  # it waited for the run of the current revision


def test_wait_does_not_end_while_a_command_is_pending():
    pending = canary(phase="Failed", weight=0)
    pending["metadata"]["annotations"]["canary.dev/retry"] = "yes"
    api = FakeApi(pending)
    api.script = [pending, canary(phase="Progressing"), canary(phase="Succeeded", weight=0)]
    code, _, _ = run(api, "status", "podinfo", "--wait", "--timeout", "60")
    assert code == 0


def test_wait_initialized_with_nothing_to_release_is_success():
    api = FakeApi(canary(phase="Initialized", weight=0, lastPromotedSpec=REV))
    assert run(api, "status", "podinfo", "--wait", "--timeout", "5")[0] == 0


def test_watch_prints_a_line_per_change():
    api = FakeApi(canary())
    api.script = [canary(weight=10), canary(weight=10), canary(weight=20), canary(phase="Succeeded", weight=0)]
    code, out, _ = run(api, "status", "podinfo", "--watch", "--wait", "--timeout", "30")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "weight 10/50" in lines[0] and "weight 20/50" in lines[1] and "Succeeded" in lines[2]
    assert lines[0].startswith("10:00:00  podinfo  Progressing")


def test_watch_ends_at_its_timeout_with_0():
    api = FakeApi(canary())
    code, out, _ = run(api, "status", "--watch", "--timeout", "3")
    assert code == 0 and len(out.splitlines()) == 1


def test_wait_needs_a_name():
    code, _, err = run(FakeApi(), "status", "--wait")
    assert code == 3 and "--wait needs a NAME" in err


# ---- explain -------------------------------------------------------------------------------------


def failed_canary() -> dict:
    ledger = [
        ledger_entry(0, "start", weight=0, message="new revision abc"),
        ledger_entry(10, "advance 10", checks=None, message="canary weight 0 -> 10"),
        ledger_entry(20, "halt", checks=[SR_BAD, DUR_OK], message="request-success-rate 48.20 < 99 (failed checks 1/2)"),
        ledger_entry(30, "rollback", phase="Failed", weight=0, checks=[SR_BAD, {**DUR_OK, "query": None}],
                     message="failed checks threshold reached (2/2): request-success-rate 48.20 < 99"),
    ]
    for e in ledger:
        for c in e.get("checks") or []:
            if c.get("query") is None:
                c.pop("query", None)
    return canary(phase="Failed", weight=0, failedChecks=2, ledger=ledger,
                  lastFailure={"time": "2026-03-01T09:50:30Z", "check": "request-success-rate", "value": 48.2,
                               "message": "request-success-rate 48.20 < 99"},
                  ledgerSummary={"entries": 12, "firstTime": "2026-03-01T08:00:00Z", "lastTime": "2026-03-01T09:40:00Z",
                                 "advances": 8, "halts": 1, "rollbacks": 1, "promotions": 1, "commands": 1})


def test_explain_names_the_deciding_check_and_value():
    code, out, _ = run(FakeApi(failed_canary()), "explain", "podinfo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Canary test/podinfo: Failed, weight 0/50, failed checks 2/2")
    assert lines[1] == ("Why: rolled back at 09:50:30 by operator: check request-success-rate (value 48.2): "
                        "request-success-rate 48.20 < 99")
    assert "12 earlier entries since 2026-03-01T08:00:00Z: 8 advances" in out
    assert any(line.startswith("TIME (UTC)") for line in lines)
    rollback = next(line for line in lines if "rollback: failed checks threshold reached" in line)
    assert rollback.split()[:4] == ["09:50:30", "Failed", "0", "operator"]
    assert "check request-success-rate 48.2 (min 99) FAILED" in out
    assert "check request-duration 12 (max 500) ok" in out
    assert "query:" not in out
    assert len(lines) < 40  # one screen


def test_explain_queries_and_json_resolve_left_out_queries():
    code, out, _ = run(FakeApi(failed_canary()), "explain", "podinfo", "--queries")
    assert out.count("query: histogram_quantile(0.99, y)") == 2  # the second entry reuses the first's
    code, out, _ = run(FakeApi(failed_canary()), "explain", "podinfo", "-o", "json")
    doc = json.loads(out)
    assert doc["phase"] == "Failed" and doc["lastFailure"]["value"] == 48.2
    assert doc["decidedBy"]["action"] == "rollback"
    assert doc["ledger"][-1]["checks"][1]["query"] == "histogram_quantile(0.99, y)"
    assert doc["ledgerSummary"]["entries"] == 12


def test_explain_a_promotion_by_a_user():
    ledger = [ledger_entry(0, "start", weight=0),
              ledger_entry(5, "command: promote by alice", phase="Promoting", weight=20, actor="user:alice",
                           message="remaining analysis skipped; promoting"),
              ledger_entry(6, "complete", phase="Succeeded", weight=0, message="promotion of revision abc finished")]
    obj = canary(phase="Succeeded", weight=0, ledger=ledger,
                 lastCommand={"id": "x", "name": "promote", "by": "alice", "time": "2026-03-01T09:50:05Z",
                              "result": "Applied", "message": "remaining analysis skipped; promoting"})
    _, out, _ = run(FakeApi(obj), "explain", "podinfo")
    assert "Why: promoted at 09:50:05 by user:alice: remaining analysis skipped; promoting" in out
    assert "Last command: promote by alice at 09:50:05: Applied" in out


def test_explain_with_an_empty_ledger():
    _, out, _ = run(FakeApi(canary(phase="Initialized", weight=0)), "explain", "podinfo")
    assert "No decisions recorded yet." in out


# ---- commands ------------------------------------------------------------------------------------


def annotation(api: FakeApi, name: str) -> dict:
    return json.loads(api.objects[("test", "podinfo")]["metadata"]["annotations"][f"canary.dev/{name}"])


@pytest.mark.parametrize("command", ["promote", "abort", "pause"])
def test_commands_set_their_annotation_with_who_and_why(command):
    api = FakeApi(canary())
    code, out, _ = run(api, command, "podinfo", "--reason", "because")
    assert code == 0
    value = annotation(api, command)
    assert value == {"by": "alice", "reason": "because", "at": "2026-03-01T10:00:00.000Z"}
    assert out.startswith(f"canary.dev/{command} set on test/podinfo (by alice, id ")
    raw = api.objects[("test", "podinfo")]["metadata"]["annotations"][f"canary.dev/{command}"]
    assert commands.command_id(command, raw) in out


def test_command_texts_say_what_will_happen():
    api = FakeApi(canary())
    _, out, _ = run(api, "abort", "podinfo")
    assert "routes all traffic back to the primary" in out
    api = FakeApi(canary(phase="Failed", weight=0))
    _, out, _ = run(api, "retry", "podinfo")
    assert f"runs revision {REV} again" in out


def test_set_weight_and_its_bounds():
    api = FakeApi(canary())
    code, out, _ = run(api, "set-weight", "podinfo", "40")
    assert code == 0 and annotation(api, "set-weight")["weight"] == 40 and "routes 40% to the canary" in out
    api = FakeApi(canary())
    code, _, err = run(api, "set-weight", "podinfo", "60")
    assert code == 1 and "outside [0, 50]" in err and not api.patches


def test_resume_removes_the_pause_annotation():
    obj = canary(paused={"since": "2026-03-01T09:58:00Z"})
    obj["metadata"]["annotations"]["canary.dev/pause"] = "x"
    api = FakeApi(obj)
    code, _, _ = run(api, "resume", "podinfo")
    (ns, name, body), = api.patches
    assert code == 0 and body["canary.dev/pause"] is None and json.loads(body["canary.dev/resume"])["by"] == "alice"


@pytest.mark.parametrize(
    ("command", "phase", "why"),
    [("promote", "Initialized", "nothing to promote"), ("abort", "Succeeded", "nothing to abort"),
     ("retry", "Progressing", "applies to a Failed canary"), ("resume", "Progressing", "not paused")],
)
def test_commands_that_would_be_rejected_are_refused(command, phase, why):
    api = FakeApi(canary(phase=phase))
    code, out, err = run(api, command, "podinfo")
    assert code == 1 and why in err and "--force" in err and not api.patches
    code, out, _ = run(api, command, "podinfo", "--force")
    assert code == 0 and api.patches and "will probably reject it" in out


def test_who_is_the_kubeconfig_user_else_user_env(monkeypatch):
    api = FakeApi(canary(), user="")
    monkeypatch.setenv("USER", "carol")
    run(api, "pause", "podinfo")
    assert annotation(api, "pause")["by"] == "carol"
    api = FakeApi(canary())
    run(api, "pause", "podinfo", "--by", "dave")
    assert annotation(api, "pause")["by"] == "dave"


@pytest.mark.parametrize(("result", "code"), [("Applied", 0), ("Rejected", 1)])
def test_command_wait_reports_the_decision(result, code):
    api = FakeApi(canary())
    decided = canary()

    def annotate(namespace, name, annotations):
        raw = annotations["canary.dev/abort"]
        decided["status"]["lastCommand"] = {"id": commands.command_id("abort", raw), "name": "abort",
                                            "time": "2026-03-01T10:00:01Z", "result": result, "message": "done"}
        api.script = [canary(), decided]
        return decided

    api.annotate = annotate
    rc, out, _ = run(api, "abort", "podinfo", "--wait")
    assert rc == code and out.splitlines()[-1] == f"{result.lower()}: done"


def test_command_wait_times_out():
    api = FakeApi(canary())
    rc, out, _ = run(api, "pause", "podinfo", "--wait", "--timeout", "3")
    assert rc == 124 and "timed out after 3s" in out


# ---- errors --------------------------------------------------------------------------------------


def test_unknown_canary_and_wrong_namespace():
    api = FakeApi(canary(namespace="prod"), canary(namespace="staging"))
    code, _, err = run(api, "explain", "podinfo", "-n", "dev")
    assert code == 3
    assert err.strip() == ('error: canary "podinfo" not found in namespace "dev"; it exists in namespaces prod, '
                           'staging (use -n NAMESPACE)')
    code, _, err = run(FakeApi(canary(namespace="prod")), "status", "podinfo", "-n", "dev")
    assert code == 3 and err.strip().endswith("it exists in namespace prod (use -n prod)")
    code, _, err = run(api, "abort", "nothing")
    assert code == 3 and err.strip() == 'error: canary "nothing" not found in namespace "test"'


def test_no_cluster():
    api = FakeApi(canary())
    api.down = True
    code, out, err = run(api, "status")
    assert code == 3 and "cannot reach the Kubernetes API server" in err and not out


def test_real_api_errors_are_one_line(tmp_path):
    dead = tmp_path / "kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: team\nusers:\n- name: u\n  user:\n    token: t\n")
    api = cli.KubeApi(str(dead))
    assert (api.namespace, api.user) == ("team", "u")
    with pytest.raises(cli.CliError, match="cannot reach the Kubernetes API server at https://127.0.0.1:1"):
        api.list_canaries(None)
    with pytest.raises(cli.CliError, match="cannot use the kubeconfig"):
        cli.KubeApi(str(tmp_path / "missing"))


# ---- the parser ------------------------------------------------------------------------------------


def test_parser_kubectl_plugin_style_and_operator_flags():
    args = cli.build_parser().parse_args(["status", "podinfo", "--kubeconfig", "/k", "-n", "x", "--wait"])
    assert (args.kubeconfig, args.namespace, args.name, args.wait) == ("/k", "x", "podinfo", True)
    args = cli.build_parser().parse_args(["--kubeconfig", "/g", "get"])
    assert args.kubeconfig == "/g" and args.func is cli.cmd_status
    args = cli.build_parser().parse_args(["set-weight", "podinfo", "30", "--reason", "r"])
    assert (args.cmd, args.weight, args.reason) == ("set-weight", 30, "r")
    op = cli.build_parser().parse_args(["operator", "--namespace", "a", "--metrics-port", "0"])
    assert op.func is cli.cmd_operator and op.namespace == "a" and op.metrics_port == 0


def test_explain_fits_one_screen_for_a_full_ledger():
    ledger = [ledger_entry(i, f"advance {i}", weight=i % 50, checks=[SR_OK, DUR_OK], message="step") for i in range(49)]
    ledger.append(ledger_entry(60, "promote", phase="Promoting", weight=40, checks=[SR_OK, DUR_OK],
                               message="analysis completed; copying the canary template to the primary"))
    obj = canary(phase="Promoting", weight=40, ledger=ledger)
    _, out, _ = run(FakeApi(obj), "explain", "podinfo")
    lines = out.splitlines()
    assert len(lines) <= 32, len(lines)
    assert "(30 older entries not shown; --all shows them)" in out
    assert "advance 48: step [request-success-rate 99.95, request-duration 12 ok]" in out
    assert "Why: promoted at" in out and "check request-success-rate 99.95 (min 99) ok" in out  # the deciding entry
    _, out, _ = run(FakeApi(obj), "explain", "podinfo", "--all")
    assert "advance 0: step" in out and "older entries" not in out


def test_explain_json_decided_by_carries_the_queries():
    _, out, _ = run(FakeApi(failed_canary()), "explain", "podinfo", "-o", "json")
    decided = json.loads(out)["decidedBy"]
    assert [c.get("query") for c in decided["checks"]] == [None, "histogram_quantile(0.99, y)"]


def test_long_messages_are_cut_in_text_but_kept_in_json():
    long = "no values found for query '" + "x" * 400 + "'"
    ledger = [ledger_entry(1, "halt", message=long, checks=[{"name": "request-success-rate", "ok": False, "min": 99,
                                                            "message": long}])]
    api = FakeApi(canary(ledger=ledger))
    _, out, _ = run(api, "explain", "podinfo")
    assert max(len(line) for line in out.splitlines()) < 220
    assert "check request-success-rate no value (min 99) FAILED: no values found" in out
    _, out, _ = run(api, "status")
    assert len(out.splitlines()[1]) < 220
    _, out, _ = run(api, "explain", "podinfo", "-o", "json")
    assert json.loads(out)["ledger"][0]["message"] == long
