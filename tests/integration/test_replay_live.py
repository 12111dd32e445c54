"""`canary simulate --from-prometheus` against the testbed's real Prometheus, fed by the traffic
simulator: a window in which the target answered with errors replays as Failed, a clean window
as Succeeded (the builtin success rate and a MetricTemplate, rendered as the operator renders
them; and a latency judged against the primary's); an unreachable URL and bad times are one-line
errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import yaml

from testbed import ops
from tests.e2e.conftest import deployment

pytestmark = pytest.mark.testbed
NAME = "podinfo"

REQUESTS = {
    "apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "requests"},
    "spec": {"provider": {"type": "prometheus", "address": "http://prometheus.invalid:9090"},
             "query": 'sum(rate(istio_requests_total{reporter="destination",'
                      'destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}"}'
                      "[{{ interval }}]))"}}


def canary_file(tmp_path, namespace: str):
    body = {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "service": {"port": 9898},
            "analysis": {"interval": "3s", "threshold": 2, "maxWeight": 30, "stepWeight": 10, "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "6s"},
                {"name": "requests", "templateRef": {"name": "requests"}, "thresholdRange": {"min": 1},
                 "interval": "6s"},
            ]},
        },
    }
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump_all([body, REQUESTS], sort_keys=False))
    return path


def compared_file(tmp_path, namespace: str):
    """The canary's p99 latency judged against the primary's (compare:)."""
    body = {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "service": {"port": 9898},
            "analysis": {"interval": "3s", "threshold": 2, "maxWeight": 50, "stepWeight": 10, "metrics": [
                # judged on the 15 s before each step; each sample the p99 of 3 s (little serial correlation)
                {"name": "latency", "templateRef": {"name": "latency"}, "interval": "15s",
                 "compare": {"tolerance": 50}},
            ]},
        },
    }
    template = {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "latency"},
                "spec": {"provider": {"type": "prometheus"},
                         "query": "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
                                  'reporter="destination",destination_workload_namespace="{{ namespace }}",'
                                  'destination_workload="{{ target }}"}[3s])) by (le))'}}
    path = tmp_path / "compared.yaml"
    path.write_text(yaml.safe_dump_all([body, template], sort_keys=False))
    return path


def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "canary.cli", "simulate", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(ops.REPO))


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_window_with_errors_replays_as_failed_and_a_clean_one_as_succeeded(api_client, namespace, testbed,
                                                                            tmp_path):
    for workload in (NAME, f"{NAME}-primary"):  # the target and a primary, half the traffic each
        ops.apply(api_client, deployment(workload), namespace)
        ops.apply(api_client, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": workload},
                               "spec": {"selector": {"app": workload}, "ports": [{"name": "http", "port": 9898}]}},
                  namespace)
    ops.apply(api_client, {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                           "metadata": {"name": NAME},
                           "spec": {"hosts": [NAME], "http": [{"route": [
                               {"destination": {"host": NAME}, "weight": 50},
                               {"destination": {"host": f"{NAME}-primary"}, "weight": 50}]}]}},
              namespace)
    ops.wait_until(lambda: ops.success_rate(namespace, NAME, "6s") == 100
                   and ops.request_rate(namespace, f"{NAME}-primary", "6s"), 60, "clean traffic on both")
    time.sleep(10)  # the compared check looks 15 s back
    clean_start = time.time()
    time.sleep(15)
    clean_end = time.time()
    ops.patch_deployment(api_client, namespace, NAME, annotations={"sim.canary.dev/error-rate": "0.5",
                                                                   "sim.canary.dev/latency-ms": "300"})
    ops.wait_until(lambda: (ops.success_rate(namespace, NAME, "6s") or 100) < 70, 60, "errors on the target")
    time.sleep(15)  # the compared check looks 15 s back: only the slow canary in it
    bad_start = time.time()
    time.sleep(12)
    path = str(canary_file(tmp_path, namespace))
    url = testbed["prometheus"]

    # the clean window, in RFC 3339
    out = simulate(path, "--from-prometheus", url, "--start", rfc3339(clean_start + 1), "--end", rfc3339(clean_end),
                   "--expect", "Succeeded", "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["outcome"] == "Succeeded" and data["replay"]["steps"] >= 4 and data["replay"]["step"] == 3
    values = {m["name"]: m["values"] for m in data["replay"]["metrics"]}
    assert all(v == 100 for v in values["request-success-rate"]), values
    assert all(v is not None and v > 1 for v in values["requests"]), values
    query = next(m["query"] for m in data["replay"]["metrics"] if m["name"] == "requests")
    assert f'destination_workload_namespace="{namespace}",destination_workload="{NAME}"' in query and "[6s]" in query

    # the window with errors, relative to now; the text output of simulate
    ago = int(time.time() - bad_start)
    out = simulate(path, "--from-prometheus", url, "--start", f"-{ago}s", "--end", "-1s", "--expect", "Failed")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("replayed ") and f"of {url}" in lines[0]
    outcome = next(line for line in lines if line.startswith("OUTCOME "))
    assert outcome.startswith("OUTCOME Failed") and "request-success-rate" in outcome, out.stdout
    assert any(line.startswith("request-success-rate") and "failed" in line for line in lines)
    # --expect is honoured: the wrong expectation exits 1
    wrong = simulate(path, "--from-prometheus", url, "--start", f"-{ago}s", "--end", "-1s", "--expect", "Succeeded")
    assert wrong.returncode == 1 and "expected Succeeded, the outcome is Failed" in wrong.stderr

    # a compared metric: judged on the samples of the canary and the primary the operator would have fetched
    compared = str(compared_file(tmp_path, namespace))
    out = simulate(compared, "--from-prometheus", url, "--start", rfc3339(clean_start + 1), "--end", rfc3339(clean_end),
                   "--expect", "Succeeded", "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    samples = json.loads(out.stdout)["replay"]["metrics"][0]["samples"]
    # each step: the 15 s before it, one sample a second (fewer where the traffic had just begun)
    assert max(samples["canary"]) == max(samples["primary"]) == 15 and min(samples["canary"]) >= 5, samples
    out = simulate(compared, "--from-prometheus", url, "--start", f"-{int(time.time() - bad_start)}s", "--end", "-1s",
                   "--expect", "Failed")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Fail against the primary" in out.stdout, out.stdout

    # mistakes: one line each, no traceback
    for args, message in (
        (["--from-prometheus", "http://127.0.0.1:1", "--start", "-1m"], "cannot reach"),
        (["--from-prometheus", url, "--start", "yesterday"], "is not a time"),
        (["--from-prometheus", url, "--start", "-1m", "--end", "-2m"], "is not after --start"),
        (["--from-prometheus", url, "--start", "-100h"], "at most 1000"),
        (["--from-prometheus", url], "needs --start"),
        (["--start", "-1m"], "go with --from-prometheus"),
    ):
        out = simulate(path, *args)
        assert out.returncode == 3 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
