"""Shared fixtures. Tests marked `testbed` run on the local testbed (real API server,
Prometheus and simulators), which the session starts once and stops at the end unless it
was already running (then it is left as found)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def testbed():
    from testbed import cluster

    was_running = cluster.status()["running"]
    try:
        info = cluster.up()
    except cluster.TestbedError as e:
        pytest.fail(f"testbed could not start: {e}")
    cluster.install_crds(cluster.paths(), [REPO / "crds"])
    yield info
    if not was_running and not os.environ.get("CANARY_TESTBED_KEEP"):
        cluster.down()


@pytest.fixture(scope="session")
def api_client(testbed):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=testbed["kubeconfig"])
    yield client
    client.close()


@pytest.fixture
def namespace(api_client, request):
    """A fresh namespace for one test, deleted afterwards."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(api_client)
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"canary.dev/test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException:
        pass


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def pytest_configure(config):
    # the testbed's apiserver has a self-signed certificate on loopback
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
