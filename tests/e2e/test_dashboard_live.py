"""`canary dashboard` as a person uses it: the command run against the testbed's API server
during a live release, looked at in a real headless browser (Debian's chromium, driven by
selenium through chromium-driver): the Canary listed with its phase, its weight changing on
the page without a reload (server-sent events), its own page with the explain timeline drawn,
a hostile reason shown as text, no action buttons and a refused POST when read-only, the
buttons and a working pause with --allow-actions, and a screenshot checked."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from testbed import cluster, ops
from tests.e2e.test_operator import IMAGE2, setup_canary

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                       reason="chromium and chromium-driver (Debian packages, scripts/setup.sh) are not installed"),
]
NAME = "podinfo"
HOSTILE = '<img id="pwn" src="x" onerror="document.title=\'pwned\'"> & </script>'


class Dashboard:
    """`canary dashboard` as a process; its URL read from what it prints."""

    def __init__(self, *args: str):
        kubeconfig = str(cluster.paths().kubeconfig("admin"))
        self.proc = subprocess.Popen([sys.executable, "-m", "canary.cli", "dashboard", "--port", "0", *args,
                                      "--kubeconfig", kubeconfig], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=str(ops.REPO))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + (self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.url = line.rsplit(" at ", 1)[1].strip()
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def post(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        req = urllib.request.Request(self.url.rstrip("/") + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate(driver)
        except Exception as e:  # an element replaced while read: try again
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}); the page:\n"
                         f"{driver.find_element('tag name', 'body').text}")


def texts(driver, css: str) -> list[str]:
    """The text of every element matching `css`, read at once (the page replaces a card when it
    changes: an element found a moment earlier may be gone)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)


def card_text(driver, css: str) -> str:
    found = texts(driver, f"article.canary {css} .value")
    return found[0] if found else ""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def test_the_dashboard_follows_a_release_live(api_client, namespace, operator, hooks, tmp_path, browser):
    from selenium.webdriver.common.by import By

    gate = {"name": "approve", "type": "confirm-promotion", "url": f"{hooks.url}/gate/{namespace}"}
    setup_canary(api_client, namespace, operator=operator, interval="3s", max_weight=30, step_weight=10,
                 webhooks=[gate])
    dash = Dashboard("-n", namespace)
    actions = None
    try:
        browser.get(dash.url)
        wait(browser, lambda d: "Initialized" in card_text(d, ".phase"), 30, "the Canary listed as Initialized")
        assert texts(browser, "article.canary h2 a") == [f"{namespace}/{NAME}"]
        assert browser.execute_script("return document.querySelector('article.canary h2 a').getAttribute('href')") \
            == f"/canary/{namespace}/{NAME}"
        assert browser.find_element(By.ID, "conn").text == "live"
        wait(browser, lambda d: "ghcr.io/stefanprodan/podinfo:6.0.0" in card_text(d, ".image-primary"), 20,
             "the primary's image (the Deployments' watch)")
        browser.execute_script("window.notReloaded = true")
        ops.patch_deployment(api_client, namespace, NAME, image=IMAGE2)
        seen = set()
        for want in ("set 10", "set 20"):
            text = wait(browser, lambda d: want in card_text(d, ".weight") and card_text(d, ".weight"), 60,
                        f"the weight to become {want}")
            seen.add(text)
        assert browser.execute_script("return window.notReloaded") is True  # live, over the event stream
        assert IMAGE2 in card_text(browser, ".image-canary") and "◐ Progressing" in card_text(browser, ".phase")
        row = wait(browser, lambda d: d.execute_script(
            "const r = document.querySelector('table.checks tr.ok'); return r && [r.querySelector('.check-name')"
            ".textContent, r.querySelector('.check-bounds').textContent, r.querySelectorAll('svg.spark polyline')"
            ".length]"), 30, "a passing check")
        assert row[:2] == ["request-success-rate", "min 99"] and row[2] >= 1  # the sparkline, inline SVG
        wait(browser, lambda d: "WaitingPromotion" in card_text(d, ".phase"), 60, "the promotion gate")
        assert "approve (confirm-promotion): closed" in card_text(browser, ".gates")
        wait(browser, lambda d: "routed 30" in card_text(d, ".weight"), 20, "the routed weight")
        # read-only: no buttons, and a POST (even from the page's own origin) is refused
        assert browser.find_elements(By.CSS_SELECTOR, "button.action") == []
        origin = {"Origin": f"http://127.0.0.1:{dash.port}"}
        status, answer = dash.post(f"/api/actions/{namespace}/{NAME}/promote", origin)
        assert status == 403 and "--allow-actions" in answer["message"]
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        width, height = png_size(shot.read_bytes())
        expected = browser.execute_script("return [Math.round(window.innerWidth * devicePixelRatio), "
                                          "Math.round(window.innerHeight * devicePixelRatio)]")
        assert [width, height] == expected and shot.stat().st_size > 10_000

        # the Canary's page: the timeline drawn, the ledger as explain shows it
        browser.execute_script("document.querySelector('article.canary h2 a').click()")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline svg polyline.weight"), 20, "the timeline")
        assert browser.current_url == f"{dash.url}canary/{namespace}/{NAME}"
        bands = set(texts(browser, "#timeline rect.band title"))
        assert {"Progressing", "WaitingPromotion"} <= bands, bands
        assert len(texts(browser, "#timeline g.metric")) == 2
        decisions = texts(browser, "#entries tr.entry")
        assert any("advance" in d for d in decisions) and any("wait" in d for d in decisions), decisions
        browser.save_screenshot(str(tmp_path / "canary-page.png"))

        # with --allow-actions: the buttons; without the token, a POST is still refused
        actions = Dashboard("-n", namespace, "--allow-actions")
        status, answer = actions.post(f"/api/actions/{namespace}/{NAME}/pause",
                                      {"Origin": f"http://127.0.0.1:{actions.port}"})
        assert status == 403 and "token" in answer["message"]
        browser.get(f"{actions.url}canary/{namespace}/{NAME}")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button.action"), 20, "the action buttons")
        assert texts(browser, "button.action") == [
            "promote", "abort", "retry", "pause", "resume", "set-weight"]
        browser.find_element(By.CSS_SELECTOR, "input.reason").send_keys(HOSTILE)
        browser.find_element(By.CSS_SELECTOR, 'button[data-command="pause"]').click()
        result = wait(browser, lambda d: (texts(d, "#action-result") + [""])[0] not in ("", "pause…")
                      and texts(d, "#action-result")[0], 20, "the answer to pause")
        assert "canary.dev/pause set on" in result, result
        ops.wait_until(lambda: (ops.canary_status(api_client, namespace, NAME).get("paused") or {}).get("reason")
                       == HOSTILE, 30, "the operator to pause with the reason")
        # the reason, hostile markup and all, shown as text: no element made of it, no script run
        browser.get(dash.url)
        note = wait(browser, lambda d: HOSTILE in card_text(d, ".note") and card_text(d, ".note"), 30,
                    "the pause reason on the list")
        assert note.startswith("paused by ")
        assert browser.find_elements(By.ID, "pwn") == [] and browser.title != "pwned"
        browser.get(f"{dash.url}canary/{namespace}/{NAME}")
        wait(browser, lambda d: any(HOSTILE in t or HOSTILE.replace('"', '\\"') in t for t in texts(d, "ul.annotations li")),
             20, "the annotation on the Canary's page")
        assert browser.find_elements(By.ID, "pwn") == [] and browser.title != "pwned"
        assert browser.find_elements(By.CSS_SELECTOR, "button.action") == []  # the read-only one again
        # DNS rebinding: a name other than the bound address is refused
        assert dash.get("/api/canaries", {"Host": f"rebind.example:{dash.port}"})[0] == 403
        # -A: every namespace, the images from the cluster-wide watch of the Deployments
        every = Dashboard("-A")
        try:
            def listed():
                status, body = every.get("/api/canaries")
                cards = {c["key"]: c for c in json.loads(body)["canaries"]} if status == 200 else {}
                card = cards.get(f"{namespace}/{NAME}")
                return card if card and card["primary"]["image"].endswith("podinfo:6.0.0") else None

            card = ops.wait_until(listed, 30, "the Canary on the -A dashboard")
            assert card["canary"]["image"] == IMAGE2 and card["paused"] is True
        finally:
            every.stop()
    finally:
        dash.stop()
        if actions is not None:
            actions.stop()
