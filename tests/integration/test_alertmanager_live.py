"""The Alertmanager provider against a real Alertmanager (Debian's prometheus-alertmanager).

The fixture starts Alertmanager on a free loopback port with a minimal configuration (one
null receiver, no cluster gossip) and stops it at the end; no testbed is needed. A failed
release fires an alert with our labels and annotations; the success that follows resolves it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from canary.adapters.notifiers import Notifier
from canary.types import Alert
from tests.unit.test_notifiers import FAILED_STATUS, Providers, make_canary, provider

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if BINARY is None:
        pytest.fail("prometheus-alertmanager is not installed (scripts/setup.sh installs it)")
    work: Path = tmp_path_factory.mktemp("alertmanager")
    (work / "alertmanager.yml").write_text(CONFIG)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [BINARY, f"--config.file={work / 'alertmanager.yml'}", f"--storage.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=open(work / "log", "wb"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("alertmanager did not start: " + (work / "log").read_text()[-500:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def active(url: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v2/alerts", params={"filter": 'alertname="CanaryRelease"'}, timeout=5)
    r.raise_for_status()
    return [a for a in r.json() if a["status"]["state"] == "active"]


async def test_failure_fires_and_success_resolves(alertmanager: str) -> None:
    providers = Providers({("shop", "am"): provider("alertmanager", alertmanager,
                                                    linkTemplate="https://grafana.example/d/c?c={{ canary }}")})
    n = Notifier(providers=providers, cluster_name="testbed", backoff=0.01, timeout=5)
    entry = [{"name": "am", "providerRef": {"name": "am"}}]

    (r,) = await n.notify(make_canary(entry, FAILED_STATUS), Alert("error", "Failed checks threshold reached 3"))
    assert r.ok, r
    (alert,) = active(alertmanager)
    assert alert["labels"] == {"alertname": "CanaryRelease", "canary": "podinfo", "namespace": "shop",
                               "severity": "critical", "cluster": "testbed"}
    ann = alert["annotations"]
    assert ann["summary"] == "Failed checks threshold reached 3"
    assert ann["check"] == "request-success-rate" and ann["value"] == "48.2"
    assert alert["generatorURL"] == "https://grafana.example/d/c?c=podinfo"

    # a new release starts: nothing is sent to Alertmanager, the alert stays
    (r,) = await n.notify(make_canary(entry, {"phase": "Progressing"}), Alert("info", "New revision detected"))
    assert r.ok and len(active(alertmanager)) == 1

    # it is promoted: the alert is resolved
    (r,) = await n.notify(make_canary(entry, {"phase": "Succeeded"}),
                          Alert("info", "Canary analysis completed successfully, promotion finished."))
    assert r.ok, r
    deadline = time.monotonic() + 10
    while active(alertmanager) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert active(alertmanager) == []
    await n.aclose()


async def test_an_invalid_alert_is_a_clear_failure(alertmanager: str) -> None:
    """Alertmanager answers 400 to a body it refuses; we report the code, not its answer."""
    bad = alertmanager + "/api/v2/silences"  # wrong endpoint for an alert list
    providers = Providers({("shop", "am"): provider("alertmanager", bad)})
    n = Notifier(providers=providers, backoff=0.01, timeout=5)
    (r,) = await n.notify(make_canary([{"name": "am", "providerRef": {"name": "am"}}], FAILED_STATUS),
                          Alert("error", "x"))
    assert not r.ok and r.status_code in (400, 404, 405, 422)
    assert r.message.startswith(f"HTTP {r.status_code} after 1 attempt(s)")
    await n.aclose()
