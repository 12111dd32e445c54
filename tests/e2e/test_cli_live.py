"""The `canary` CLI as a person uses it, against the testbed's API server, Prometheus and an
operator process writing JSON logs: the kubectl-plugin conventions, `validate --cluster
--prometheus`, the live view under a real pseudo-terminal (tmux) during a release, `status
--wait` in a pipe with its heartbeats, and every line the operator wrote parsed as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import kubernetes
import pytest
import yaml

from testbed import cluster, ops
from tests.e2e.conftest import canary as canary_doc
from tests.e2e.conftest import free_port
from tests.e2e.test_operator import IMAGE2, setup_canary, wait_phase

pytestmark = pytest.mark.testbed
NAME = "podinfo"
IMAGE1 = "ghcr.io/stefanprodan/podinfo:6.0.0"


@pytest.fixture(scope="module")
def operator(testbed):
    port = free_port()
    op = ops.OperatorProcess(name=f"e2e-cli-live-{port}", metrics_port=port,
                             extra=["--log-format", "json", "--log-level", "debug"]).start()
    yield op
    op.stop()


def kubeconfig() -> str:
    return str(cluster.paths().kubeconfig("admin"))


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "canary.cli", *args, "--kubeconfig", kubeconfig()]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv(*args), capture_output=True, text=True, timeout=timeout, cwd=str(ops.REPO))


def test_plugin_conventions_against_the_api_server(api_client, namespace, operator):
    setup_canary(api_client, namespace, operator=operator)
    # global flags before the command, and a list as kubectl's envelope
    out = cli("-n", namespace, "get", "-o", "json")
    data = json.loads(out.stdout)
    assert out.returncode == 0 and data["kind"] == "List" and [i["metadata"]["name"] for i in data["items"]] == [NAME]
    out = cli("get", "--context", "testbed", "-o", "name", "-n", namespace)
    assert out.stdout.splitlines() == [f"canary.canary.dev/{NAME}"]
    out = cli("get", NAME, "-n", namespace, "-o", "wide", "--request-timeout", "10s")
    header, row = out.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "STRATEGY"] and IMAGE1 in row and "Initialized" in row
    out = cli("get", "-A", "-o", "yaml")
    assert yaml.safe_load(out.stdout)["kind"] == "List"
    out = cli("explain", NAME, "-n", namespace, "-o", "yaml")
    assert out.returncode == 0 and yaml.safe_load(out.stdout)["phase"] == "Initialized"
    # mistakes: one line, the right code
    out = cli("get", "nope", "-n", namespace)
    assert out.returncode == 3 and out.stderr.strip() == f'error: canary "nope" not found in namespace "{namespace}"'
    out = cli("status", NAME, "-n", namespace, "--wait", "--timeout", "5 minutes")
    assert out.returncode == 2 and "invalid duration" in out.stderr
    out = cli("get", "--context", "prod")
    assert out.returncode == 3 and 'context "prod" does not exist' in out.stderr
    piped = subprocess.run(" ".join(argv("get", "-A", "-o", "yaml")) + " | head -1", shell=True,
                           capture_output=True, text=True, cwd=str(ops.REPO), executable="/bin/bash", timeout=60)
    assert piped.stdout == "apiVersion: v1\n" and piped.stderr == ""
    out = cli("version")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines[0].startswith("Client Version: ") and lines[1] == "Server Version: v1.20.2"


def test_validate_with_the_cluster_and_prometheus(api_client, namespace, operator, testbed, tmp_path):
    setup_canary(api_client, namespace, operator=operator)
    ops.wait_until(lambda: (ops.request_rate(namespace, f"{NAME}-primary") or 0) > 0, 60, "traffic on the primary")
    primary_rate = {
        "apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "primary-success"},
        "spec": {"provider": {"type": "prometheus", "address": "http://prometheus.invalid:9090"},
                 "query": 'sum(rate(istio_requests_total{destination_workload_namespace="{{ namespace }}",'
                          'destination_workload="{{ target }}-primary",response_code!~"5.*"}[{{ interval }}])) / '
                          'sum(rate(istio_requests_total{destination_workload_namespace="{{ namespace }}",'
                          'destination_workload="{{ target }}-primary"}[{{ interval }}])) * 100'}}
    ops.apply(api_client, primary_rate, namespace)
    body = canary_doc(NAME, metrics=[
        # the canary is scaled to zero: nothing reports it
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "primary", "templateRef": {"name": "primary-success"}, "thresholdRange": {"min": 99},
         "interval": "30s"},
        {"name": "broken", "templateRef": {"name": "broken"}, "thresholdRange": {"max": 1}},
        {"name": "elsewhere", "templateRef": {"name": "nowhere"}, "thresholdRange": {"max": 1}},
    ])
    body["metadata"]["namespace"] = namespace
    broken = {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
              "metadata": {"name": "broken", "namespace": namespace},
              "spec": {"provider": {"type": "prometheus"}, "query": "sum(rate(istio_requests_total[1m]) by"}}
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump_all([body, broken], sort_keys=False))
    out = cli("validate", str(path), "--cluster", "--prometheus", testbed["prometheus"], "-o", "json", timeout=90)
    data = json.loads(out.stdout)
    found = {(f["path"], f["severity"]): f["message"] for f in data["findings"]}
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no data" in found[("spec.analysis.metrics[0]", "warning")]
    value = found[("spec.analysis.metrics[1]", "info")]
    assert value.startswith("primary = ") and "passes" in value and f"{NAME}-primary" in value
    assert "parse error" in found[("spec.analysis.metrics[2]", "error")]
    assert "MetricTemplate " + namespace + "/nowhere is not in the files given nor in the cluster (context " \
           "testbed)" in found[("spec.analysis.metrics[3].templateRef", "error")]
    # without --cluster, the template only in the cluster is missing too
    out = cli("validate", str(path), "-o", "github")
    assert f"MetricTemplate {namespace}/primary-success is not in the files given" in out.stdout
    assert out.stdout.startswith("::")


# ---- the live view and --wait during a release ------------------------------------------------------


class Tmux:
    """A real pseudo-terminal: a tmux session of its own socket, its screen captured."""

    def __init__(self, command: str, width: int = 130, height: int = 45, env: dict[str, str] | None = None):
        self.socket = f"canary-cli-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        full = f"cd {ops.REPO} && {exports} {command}; sleep 600"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-x", str(width), "-y", str(height),
                        "-s", "v", full], check=True)

    def screen(self, escapes: bool = False) -> str:
        flags = ["-p", "-e"] if escapes else ["-p"]
        return subprocess.run(["tmux", "-L", self.socket, "capture-pane", *flags, "-t", "v"], capture_output=True,
                              text=True).stdout

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux (Debian package) is not installed")
def test_live_view_and_wait_during_a_release(api_client, namespace, operator, hooks, tmp_path):
    gate = {"name": "approve", "type": "confirm-promotion", "url": f"{hooks.url}/gate/{namespace}"}
    setup_canary(api_client, namespace, operator=operator, interval="2s", max_weight=30, step_weight=10,
                 webhooks=[gate])
    watch = " ".join(argv("get", NAME, "-n", namespace, "--watch"))
    live = Tmux(watch)
    plain = Tmux(watch, env={"NO_COLOR": "1"})
    waiter = None
    try:
        live.wait_for(lambda s: "Initialized" in s, 30, "the live view")
        ops.patch_deployment(api_client, namespace, NAME, image=IMAGE2)
        # as in CI: `kubectl set image ... && canary status NAME --wait`, its stdout a pipe
        waiter = subprocess.Popen(argv("status", NAME, "-n", namespace, "--wait", "--timeout", "3m"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ops.REPO))
        screen = live.wait_for(lambda s: "◐ Progressing" in s and "set 10" in s and IMAGE2 in s, 60,
                               "a step of the release")
        assert f"Canary {namespace}/{NAME}" in screen and "Strategy   canary   STEP 1/3" in screen
        assert f"Primary    {IMAGE1}" in screen and "ready" in screen
        def passing(s: str) -> str | None:
            return next((line for line in s.splitlines() if "request-success-rate" in line and line.endswith(" ok")
                         and any(c in line for c in "▁▂▃▄▅▆▇█")), None)

        screen = live.wait_for(lambda s: passing(s) and "next analysis in" in s, 60, "a passing check")
        assert "min 99" in passing(screen)
        screen = live.wait_for(lambda s: "WaitingPromotion" in s, 90, "the promotion gate")
        assert "Gates      approve (confirm-promotion): closed" in screen
        assert "routed 30" in live.wait_for(lambda s: "routed 30" in s, 20, "the routed weight")
        (tmp_path / "live-waiting.txt").write_text(screen)
        time.sleep(33)  # nothing changes at a closed gate: the waiter must say so
        hooks.open.add(namespace)
        screen = live.wait_for(lambda s: "✔ Succeeded" in s, 120, "the promotion")
        (tmp_path / "live-succeeded.txt").write_text(screen)
        # redrawn in place: one view on the screen, not a view per change
        assert screen.count(f"Canary {namespace}/{NAME}") == 1
        assert f"Primary    {IMAGE2}" in screen
        colours = live.screen(escapes=True)
        assert "\x1b[" in colours and ("\x1b[1;32m" in colours or "\x1b[32m" in colours or "32;1m" in colours)
        # NO_COLOR: lines appended, no colour
        text = plain.wait_for(lambda s: "Succeeded" in s, 20, "the plain lines")
        rows = [line for line in text.splitlines() if line[:2].isdigit() and line[2:3] == ":"]
        assert len(rows) >= 5 and any("Succeeded" in line for line in rows), text
        # a closed gate polled again, its metrics moving a little, is not a change worth a line
        assert sum("WaitingPromotion" in line for line in rows) <= 2, text
        assert "\x1b[3" not in plain.screen(escapes=True)
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, (out, err)
        lines = out.splitlines()
        beats = [line for line in lines if "(no change for 30s)" in line]
        assert beats and "WaitingPromotion" in beats[0], out
        assert "Succeeded" in lines[-1] and len(lines) >= 3, out
    finally:
        live.close()
        plain.close()
        if waiter is not None and waiter.poll() is None:
            waiter.kill()


def test_explain_plot_of_a_live_ledger(api_client, namespace, operator, tmp_path):
    pytest.importorskip("matplotlib")
    setup_canary(api_client, namespace, operator=operator, interval="2s", max_weight=20, step_weight=10)
    ops.patch_deployment(api_client, namespace, NAME, image=IMAGE2)
    wait_phase(api_client, namespace, NAME, {"Succeeded"}, 90, operator)
    picture = tmp_path / "ledger.png"
    out = cli("explain", NAME, "-n", namespace, "--plot", str(picture))
    assert out.returncode == 0 and picture.read_bytes().startswith(b"\x89PNG") and picture.stat().st_size > 20000
    shutil.copy(picture, Path(cluster.paths().logs) / f"explain-{namespace}.png")  # to look at


def test_every_operator_log_line_is_json(operator, api_client):
    """Runs last in the module: every line the operator wrote during the releases above."""
    text = operator.log_path.read_text()
    lines = text.splitlines()
    assert len(lines) > 50
    about = 0
    for line in lines:
        record = json.loads(line)  # fails on any line that is not one JSON object
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
        if f"/{NAME}" in record["message"] and "namespace" not in record:
            raise AssertionError(f"a line about a Canary without its name: {record}")
        if "canary" in record:
            about += 1
            assert record["canary"] and record["namespace"]
    assert about > 10
