"""Alert payloads per provider, routing by severity and the Notifier's HTTP behaviour.

HTTP goes to a real local aiohttp server (and, for the proxy test, a local forward proxy) so
that timeouts, retries and proxies are exercised as in production.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from aiohttp import web

from canary.adapters.notifiers import (
    AlertInfo,
    Notifier,
    Target,
    build_request,
    describe,
    discord_url,
    gchat_payload,
    generic_payload,
    msteams_payload,
    rocket_payload,
    routes_to,
    slack_legacy_payload,
    slack_payload,
)
from canary.models import Canary, CanaryStatus
from canary.types import Alert

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
FAST = {"backoff": 0.01, "timeout": 2.0}


# ---- fixtures -----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    url: str = ""


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> 5xx answers left

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        rec.received.append(Received(request.path, dict(request.headers), body, str(request.url)))
        left = rec.fail_first.get(request.path, 0)
        if left > 0:
            rec.fail_first[request.path] = left - 1
            return web.Response(status=503, text="busy")
        if request.path.startswith("/status/"):
            return web.Response(status=int(request.path.rsplit("/", 1)[1]), text="nope")
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        return web.Response(status=200, text="ok")

    runner, rec.url = await _serve(handle)
    try:
        yield rec
    finally:
        await runner.cleanup()


def make_canary(alerts: list[dict] | None = None, status: dict | None = None, namespace: str = "shop") -> Canary:
    analysis: dict[str, Any] = {"interval": "1m", "threshold": 3, "maxWeight": 50, "stepWeight": 10}
    if alerts is not None:
        analysis["alerts"] = alerts
    obj: dict[str, Any] = {
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "progressDeadlineSeconds": 120,
            "analysis": analysis,
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


FAILED_STATUS = {
    "phase": "Failed",
    "canaryWeight": 0,
    "failedChecks": 3,
    "lastAppliedSpec": "7d9f6c5b8",
    "lastFailure": {"time": "2026-03-01T11:59:00Z", "check": "request-success-rate", "value": 48.2,
                    "message": "request-success-rate 48.20 < 99"},
}

DEPLOYMENT = {"spec": {"template": {"spec": {"containers": [
    {"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.1"},
    {"name": "sidecar", "image": "envoy:1.30"},
]}}}}


def provider(type_: str, address: str | None = None, **spec: Any) -> dict:
    body = {"type": type_, **spec}
    if address is not None:
        body["address"] = address
    return {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "p"}, "spec": body}


class Providers:
    """A watch-cache stand-in: (namespace, name) -> AlertProvider object."""

    def __init__(self, objs: dict[tuple[str, str], dict]):
        self.objs = objs

    def __call__(self, namespace: str, name: str) -> dict | None:
        return self.objs.get((namespace, name))


class FakeKube:
    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]]):
        self.secrets = secrets
        self.gets: list[tuple[str, str, str | None, str]] = []

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict | None:
        self.gets.append((api_version, plural, namespace, name))
        data = self.secrets.get((namespace or "", name))
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def info(severity: str = "error", **kw: Any) -> AlertInfo:
    base = dict(canary="podinfo", namespace="shop", severity=severity,
                message="Failed checks threshold reached 3: request-success-rate 48.20 < 99",
                phase="Failed", weight=0, revision="7d9f6c5b8", image="ghcr.io/stefanprodan/podinfo:6.0.1",
                target="Deployment/podinfo.shop", check="request-success-rate", value=48.2,
                failure="request-success-rate 48.20 < 99", failed_checks=3, threshold=3,
                progress_deadline=120, traffic="Weight step: 10 max: 50", timestamp=NOW)
    base.update(kw)
    return AlertInfo(**base)


# ---- routing by severity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "alert", "sent"),
    [
        ("info", "info", True), ("info", "warn", True), ("info", "error", True),
        ("warn", "info", False), ("warn", "warn", True), ("warn", "error", True),
        ("error", "info", False), ("error", "warn", False), ("error", "error", True),
        (None, "info", True), (None, "error", True), ("", "warn", True),  # missing = info (not Flagger's "never")
        ("bogus", "error", False),
    ],
)
def test_routes_to(entry: str | None, alert: str, sent: bool) -> None:
    assert routes_to(entry, alert) is sent


# ---- what an alert says ------------------------------------------------------------------------


def test_describe_takes_facts_from_status_and_target() -> None:
    c = make_canary(status=FAILED_STATUS)
    i = describe(c, Alert("error", "Failed checks threshold reached 3: request-success-rate 48.20 < 99"),
                 DEPLOYMENT, NOW)
    assert (i.canary, i.namespace, i.phase, i.weight) == ("podinfo", "shop", "Failed", 0)
    assert i.target == "Deployment/podinfo.shop"
    assert i.image == "ghcr.io/stefanprodan/podinfo:6.0.1, envoy:1.30"
    assert (i.check, i.value, i.revision) == ("request-success-rate", 48.2, "7d9f6c5b8")
    fields = dict(i.fields())
    assert fields["Failed check"] == "request-success-rate" and fields["Value"] == "48.2"
    assert fields["Failed checks"] == "3/3"
    assert fields["Progress deadline"] == "120s"
    assert fields["Traffic routing"] == "Weight step: 10 max: 50"
    assert "Reason" not in fields  # already in the message


def test_describe_prefers_the_given_status_and_handles_no_status() -> None:
    c = make_canary()
    i = describe(c, Alert("info", "New revision detected, progressing canary analysis."), None, NOW)
    assert (i.phase, i.weight, i.check, i.image) == ("", 0, None, None)
    st = CanaryStatus.model_validate({"phase": "Succeeded", "canaryWeight": 0, "lastAppliedSpec": "abc"})
    i = describe(c, Alert("info", "promoted"), None, NOW, status=st)
    assert (i.phase, i.revision) == ("Succeeded", "abc")
    assert "Failed check" not in dict(i.fields())
    # a promotion after failed checks below the threshold: lastFailure is not the deciding check
    st.last_failure = CanaryStatus.model_validate(FAILED_STATUS).last_failure
    i = describe(c, Alert("info", "promoted"), None, NOW, status=st)
    assert (i.check, i.value, i.failure) == (None, None, None)
    assert describe(c, Alert("error", "rolled back"), None, NOW, status=st).check == "request-success-rate"


def test_traffic_routing_texts() -> None:
    steps = make_canary()
    steps.spec.analysis.step_weights = [5, 20, 60]
    assert describe(steps, Alert("info", "x"), now=NOW).traffic == "Weight steps: 5,20,60 max: 60"
    bg = make_canary()
    bg.spec.analysis.iterations = 5
    assert describe(bg, Alert("info", "x"), now=NOW).traffic == "Blue/Green"


# ---- payload shapes ----------------------------------------------------------------------------


def test_slack_payload_is_block_kit_with_dense_facts() -> None:
    p = slack_payload(info(cluster="prod-eu", link="https://grafana.example/d/x"), channel="on-call", username="bot")
    assert set(p) == {"channel", "username", "icon_emoji", "text", "blocks", "attachments"}
    assert (p["channel"], p["username"], p["icon_emoji"]) == ("on-call", "bot", ":rocket:")
    # notifications and clients without Block Kit read the text
    assert p["text"] == "podinfo.shop (prod-eu): Failed checks threshold reached 3: request-success-rate 48.20 &lt; 99"
    header, message = p["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "podinfo.shop (prod-eu)", "emoji": False}}
    assert message["type"] == "section" and message["text"] == {
        "type": "mrkdwn", "text": "Failed checks threshold reached 3: request-success-rate 48.20 &lt; 99"}
    assert message["accessory"] == {"type": "button", "text": {"type": "plain_text", "text": "Details"},
                                    "url": "https://grafana.example/d/x"}
    (att,) = p["attachments"]
    assert set(att) == {"color", "fallback", "blocks"} and att["color"] == "danger"
    facts, lines, context = att["blocks"]
    assert [f["text"] for f in facts["fields"]] == [
        "*Cluster*\nprod-eu", "*Target*\nDeployment/podinfo.shop",
        "*Status*\nFailed · weight 0% · failed checks 3/3", "*Failed check*\nrequest-success-rate = 48.2"]
    assert lines["text"]["text"] == "*Image*: ghcr.io/stefanprodan/podinfo:6.0.1"
    (ctx,) = context["elements"]
    assert context["type"] == "context" and ctx["text"].startswith(
        "canary-operator · Weight step: 10 max: 50 · deadline 120s · <!date^1772366400^")
    assert ctx["text"].endswith("|2026-03-01T12:00:00Z>")
    assert slack_payload(info())["username"] == "canary-operator"
    assert slack_payload(info("info"))["attachments"][0]["color"] == "good"
    assert slack_payload(info("warn"))["attachments"][0]["color"] == "warning"
    assert "accessory" not in slack_payload(info())["blocks"][1]  # no link, no button


def test_slack_texts_fit_block_kits_limits_without_cutting_an_escape() -> None:
    """Slack refuses a whole message whose blocks are too long: every text is fitted."""
    long = "<" * 2000
    p = slack_payload(info(canary="a" * 200, message=long, failure="&" * 3000, image="i" * 2500))
    header = p["blocks"][0]["text"]["text"]
    assert len(header) <= 150 and header.endswith("…")
    text = p["blocks"][1]["text"]["text"]
    assert len(text) <= 3000 and text.endswith("&lt;…")  # never a dangling "&l"
    facts, lines, _ = p["attachments"][0]["blocks"]
    assert len(facts["fields"]) <= 10 and all(len(f["text"]) <= 2000 for f in facts["fields"])
    assert len(lines["text"]["text"]) <= 3000 and lines["text"]["text"].startswith("*Reason*: &amp;&amp;")
    assert lines["text"]["text"].split("\n")[1].startswith("*Image*: iii")
    assert len(p["text"]) <= 3000
    for s in (header, text, lines["text"]["text"], p["text"]):
        assert not re.search(r"&[a-z]{0,4}…$", s), s[-12:]


def test_the_cluster_is_in_every_chat_message() -> None:
    i = info(cluster="prod-eu")
    for body in (slack_payload(i), rocket_payload(i), msteams_payload(i), gchat_payload(i), generic_payload(i)):
        assert "prod-eu" in str(body)


def test_rocket_and_discord_get_the_legacy_attachment() -> None:
    p = rocket_payload(info("error"))
    assert p["attachments"][0]["color"] == "#FF0000"
    assert rocket_payload(info("info"))["attachments"][0]["color"] == "#0076D7"
    assert set(p) == {"channel", "username", "icon_emoji", "attachments"}
    (att,) = slack_legacy_payload(info())["attachments"]
    assert set(att) == {"color", "author_name", "text", "mrkdwn_in", "fields", "fallback"}
    assert att["color"] == "danger" and att["author_name"] == "podinfo.shop"
    assert {"title": "Failed check", "value": "request-success-rate = 48.2", "short": True} in att["fields"]
    assert {"title": "Status", "value": "Failed · weight 0% · failed checks 3/3", "short": False} in att["fields"]
    assert len(att["fields"]) <= 6  # fewer, denser fields than Flagger's ten
    _, body, _ = build_request(Target(name="ns/p", type="discord", address="https://discord.example/x"), info())
    assert "blocks" not in body and body["attachments"][0]["author_name"] == "podinfo.shop"


def test_discord_url() -> None:
    assert discord_url("https://discord.com/api/webhooks/1/abc") == "https://discord.com/api/webhooks/1/abc/slack"
    assert discord_url("https://discord.com/api/webhooks/1/abc/slack") == "https://discord.com/api/webhooks/1/abc/slack"
    assert discord_url("https://discord.com/api/webhooks/1/abc/") == "https://discord.com/api/webhooks/1/abc/slack"


def test_msteams_payload_shape() -> None:
    p = msteams_payload(info("error"))
    assert p["@type"] == "MessageCard" and p["@context"] == "http://schema.org/extensions"
    assert p["themeColor"] == "FF0000"
    assert p["summary"].startswith("podinfo.shop: Failed checks")
    (section,) = p["sections"]
    assert section["activityTitle"].startswith("Failed checks threshold reached")
    assert section["activitySubtitle"] == "podinfo.shop"
    assert {"name": "Value", "value": "48.2"} in section["facts"]
    assert msteams_payload(info("info"))["themeColor"] == "0076D7"


def test_gchat_payload_shape() -> None:
    p = gchat_payload(info(message="a <b> & c"))
    (card,) = p["cards"]
    assert card["header"] == {"title": "canary-operator", "subtitle": "podinfo.shop"}
    widgets = card["sections"][0]["widgets"]
    assert widgets[0] == {"textParagraph": {"text": "a &lt;b&gt; &amp; c"}}
    assert {"textParagraph": {"text": "<b>Failed check</b>: request-success-rate"}} in widgets
    assert all(set(w) == {"textParagraph"} for w in widgets)


def test_generic_payload_shape() -> None:
    p = generic_payload(info())
    assert set(p) == {"canary", "namespace", "cluster", "severity", "message", "phase", "weight", "revision",
                      "image", "target", "check", "value", "link", "timestamp", "fields"}
    assert p["check"] == "request-success-rate" and p["value"] == 48.2
    assert p["timestamp"] == "2026-03-01T12:00:00Z"
    assert p["fields"]["Target"] == "Deployment/podinfo.shop"


@pytest.mark.parametrize(
    ("type_", "url", "shape"),
    [
        ("slack", "https://hooks.example/x", "blocks"),
        ("discord", "https://discord.example/x", "attachments"),
        ("rocket", "https://rocket.example/x", "attachments"),
        ("msteams", "https://teams.example/x", "@type"),
        ("gchat", "https://chat.example/x", "cards"),
        ("googlechat", "https://chat.example/x", "cards"),
        ("generic", "https://any.example/x", "canary"),
    ],
)
def test_build_request_per_type(type_: str, url: str, shape: str) -> None:
    target = Target(name="ns/p", type=type_, address=url, token="s3cret")
    got_url, body, headers = build_request(target, info())
    assert shape in body
    assert got_url == (url + "/slack" if type_ == "discord" else url)
    if type_ in ("slack", "generic"):
        assert headers == {"Authorization": "Bearer s3cret"}
    else:
        assert headers == {}


def test_build_request_unknown_type() -> None:
    with pytest.raises(ValueError):
        build_request(Target(name="x", type="pager", address="http://x"), info())


# ---- the Notifier ------------------------------------------------------------------------------


ALL_SEVERITIES = [
    {"name": "all", "providerRef": {"name": "p-info"}, "severity": "info"},
    {"name": "warnings", "providerRef": {"name": "p-warn"}, "severity": "warn"},
    {"name": "errors", "providerRef": {"name": "p-error"}, "severity": "error"},
    {"name": "unset", "providerRef": {"name": "p-unset"}},
]


def severity_providers(url: str) -> Providers:
    return Providers({("shop", f"p-{s}"): provider("generic", f"{url}/{s}") for s in ("info", "warn", "error", "unset")})


@pytest.mark.parametrize(
    ("severity", "paths"),
    [
        ("info", {"/info", "/unset"}),
        ("warn", {"/info", "/unset", "/warn"}),
        ("error", {"/info", "/unset", "/warn", "/error"}),
    ],
)
async def test_notifier_routes_by_severity(receiver: Receiver, severity: str, paths: set[str]) -> None:
    n = Notifier(providers=severity_providers(receiver.url), **FAST)
    results = await n.notify(make_canary(ALL_SEVERITIES), Alert(severity, "hello"))
    assert all(r.ok for r in results) and len(results) == len(paths)
    assert set(receiver.paths()) == paths
    assert all(r.body["severity"] == severity for r in receiver.received)
    await n.aclose()


async def test_provider_namespace_defaults_to_the_canarys(receiver: Receiver) -> None:
    providers = Providers({
        ("shop", "local"): provider("generic", f"{receiver.url}/local"),
        ("ops", "central"): provider("generic", f"{receiver.url}/central"),
    })
    alerts = [{"name": "a", "providerRef": {"name": "local"}},
              {"name": "b", "providerRef": {"name": "central", "namespace": "ops"}},
              {"name": "c", "providerRef": {"name": "missing"}}]
    n = Notifier(providers=providers, **FAST)
    results = await n.notify(make_canary(alerts), Alert("info", "hi"))
    assert sorted(receiver.paths()) == ["/central", "/local"]
    assert [r.provider for r in results] == ["shop/local", "ops/central"]
    await n.aclose()


async def test_secret_address_and_token_override_spec(receiver: Receiver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret_path = "/services/T0/B0/SECRETPATH"
    kube = FakeKube({("ops", "slack-url"): {"address": receiver.url + secret_path, "token": "xoxb-TOKEN"}})
    providers = Providers({("ops", "chat"): provider("slack", f"{receiver.url}/spec-address", channel="alerts",
                                                     secretRef={"name": "slack-url"})})
    n = Notifier(kube, providers, **FAST)
    c = make_canary([{"name": "chat", "providerRef": {"name": "chat", "namespace": "ops"}}], FAILED_STATUS)
    (result,) = await n.notify(c, Alert("error", "rolled back"))
    assert result.ok
    assert kube.gets == [("v1", "secrets", "ops", "slack-url")]  # one GET, in the provider's namespace
    (got,) = receiver.received
    assert got.path == secret_path
    assert got.headers["Authorization"] == "Bearer xoxb-TOKEN"
    assert got.body["channel"] == "alerts" and got.body["attachments"][0]["color"] == "danger"
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("canary"))
    assert "sent to ops/chat" in ours
    assert "SECRETPATH" not in ours and "xoxb-TOKEN" not in ours  # (httpx's own INFO log is off in the CLI)
    await n.aclose()


async def test_secret_read_only_when_an_alert_is_routed(receiver: Receiver) -> None:
    kube = FakeKube({("shop", "s"): {"address": receiver.url + "/x"}})
    providers = Providers({("shop", "p"): provider("generic", secretRef={"name": "s"})})
    n = Notifier(kube, providers, **FAST)
    c = make_canary([{"name": "e", "providerRef": {"name": "p"}, "severity": "error"}])
    assert await n.notify(c, Alert("info", "not for this entry")) == []
    assert kube.gets == []
    (r,) = await n.notify(c, Alert("error", "for it"))
    assert r.ok and len(kube.gets) == 1
    await n.aclose()


async def test_secret_missing_and_no_spec_address_is_skipped(receiver: Receiver) -> None:
    seen = []
    providers = Providers({("shop", "p"): provider("generic", secretRef={"name": "gone"})})
    n = Notifier(FakeKube({}), providers, on_delivery=seen.append, **FAST)
    c = make_canary([{"name": "e", "providerRef": {"name": "p"}}])
    assert await n.notify(c, Alert("error", "x")) == []
    assert [(d.provider, d.ok, d.message) for d in seen] == [("shop/p", False, "no address")]
    await n.aclose()


async def test_proxy_option_is_passed(receiver: Receiver) -> None:
    factories: list[str | None] = []

    def factory(proxy: str | None) -> httpx.AsyncClient:
        factories.append(proxy)
        return httpx.AsyncClient(timeout=2.0)

    providers = Providers({
        ("shop", "via-proxy"): provider("msteams", f"{receiver.url}/teams", proxy="http://squid.example:3128"),
        ("shop", "direct"): provider("msteams", f"{receiver.url}/teams2"),
    })
    alerts = [{"name": "a", "providerRef": {"name": "via-proxy"}}, {"name": "b", "providerRef": {"name": "direct"}}]
    n = Notifier(providers=providers, client_factory=factory, **FAST)
    await n.notify(make_canary(alerts), Alert("info", "x"))
    await n.notify(make_canary(alerts), Alert("info", "y"))
    assert sorted(factories, key=str) == [None, "http://squid.example:3128"]  # one pooled client per proxy
    await n.aclose()


async def test_proxy_is_really_used(receiver: Receiver) -> None:
    """The default client sends through the proxy: a local proxy sees the absolute URL."""
    proxied: list[str] = []

    async def proxy_handler(request: web.Request) -> web.StreamResponse:
        proxied.append(str(request.url))
        return web.Response(status=200, text="proxied")

    runner, proxy_url = await _serve(proxy_handler)
    try:
        providers = Providers({("shop", "p"): provider("generic", "http://alerts.invalid/hook", proxy=proxy_url)})
        n = Notifier(providers=providers, **FAST)
        (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("warn", "x"))
        assert r.ok, r
        assert proxied == ["http://alerts.invalid/hook"]
        await n.aclose()
    finally:
        await runner.cleanup()


async def test_retries_on_5xx_then_succeeds(receiver: Receiver) -> None:
    receiver.fail_first["/flaky/slack"] = 2  # discord posts to <url>/slack
    n = Notifier(providers=Providers({("shop", "p"): provider("discord", f"{receiver.url}/flaky")}), **FAST)
    c = make_canary([{"name": "a", "providerRef": {"name": "p"}}])
    (r,) = await n.notify(c, Alert("info", "x"))
    assert r.ok and r.status_code == 200
    assert receiver.paths() == ["/flaky/slack"] * 3
    receiver.fail_first["/flaky/slack"] = 5
    (r,) = await n.notify(c, Alert("info", "x"))
    assert not r.ok and r.status_code == 503 and "3 attempt(s)" in r.message
    assert receiver.paths() == ["/flaky/slack"] * 6
    await n.aclose()


async def test_retries_exactly_twice(receiver: Receiver) -> None:
    receiver.fail_first["/r"] = 2
    n = Notifier(providers=Providers({("shop", "p"): provider("rocket", f"{receiver.url}/r")}), **FAST)
    (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("info", "x"))
    assert r.ok and receiver.paths() == ["/r"] * 3
    receiver.received.clear()
    receiver.fail_first["/r"] = 3
    (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("info", "x"))
    assert not r.ok and receiver.paths() == ["/r"] * 3
    await n.aclose()


async def test_4xx_is_not_retried(receiver: Receiver) -> None:
    n = Notifier(providers=Providers({("shop", "p"): provider("gchat", f"{receiver.url}/status/404")}), **FAST)
    (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("info", "x"))
    assert not r.ok and r.status_code == 404 and receiver.paths() == ["/status/404"]
    await n.aclose()


async def test_unreachable_and_slow_receivers_do_not_raise(receiver: Receiver) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/nobody"
    providers = Providers({
        ("shop", "dead"): provider("slack", dead),
        ("shop", "slow"): provider("generic", f"{receiver.url}/slow"),
        ("shop", "bad-url"): provider("generic", "not a url"),
        ("shop", "ok"): provider("generic", f"{receiver.url}/fine"),
    })
    alerts = [{"name": n, "providerRef": {"name": n}} for n in ("dead", "slow", "bad-url", "ok")]
    n = Notifier(providers=providers, backoff=0.01, timeout=0.5)
    results = {r.provider: r for r in await n.notify(make_canary(alerts), Alert("error", "x"))}
    assert results["shop/ok"].ok
    assert not results["shop/dead"].ok and "ConnectError after 3 attempt(s)" in results["shop/dead"].message
    assert not results["shop/slow"].ok and "ReadTimeout after 1 attempt(s)" in results["shop/slow"].message
    assert "shop/bad-url" not in results  # refused by the model: an address is an http(s) URL
    await n.aclose()


async def test_a_broken_lookup_never_raises() -> None:
    def boom(namespace: str, name: str) -> dict:
        raise RuntimeError("cache exploded")

    n = Notifier(providers=boom)
    assert await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x")) == []
    await n.on_alert(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x"))
    await n.drain(2)


async def test_invalid_provider_is_skipped(receiver: Receiver) -> None:
    bad = {"metadata": {"name": "p"}, "spec": {"type": "pager", "address": receiver.url}}
    n = Notifier(providers=Providers({("shop", "p"): bad}))
    assert await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x")) == []
    assert receiver.received == []


async def test_default_webhook_only_without_alerts(receiver: Receiver) -> None:
    n = Notifier(providers=Providers({("shop", "p"): provider("generic", f"{receiver.url}/entry")}),
                 default_url=f"{receiver.url}/default", **FAST)
    (r,) = await n.notify(make_canary(None, FAILED_STATUS), Alert("error", "rolled back"))
    assert r.provider == "default" and r.ok
    await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "rolled back"))
    assert receiver.paths() == ["/default", "/entry"]
    body = receiver.received[0].body
    assert body["check"] == "request-success-rate" and body["value"] == 48.2 and body["phase"] == "Failed"
    assert await Notifier(providers=Providers({})).notify(make_canary(None), Alert("error", "x")) == []
    await n.aclose()


async def test_on_alert_returns_at_once_and_sends_in_background(receiver: Receiver) -> None:
    n = Notifier(providers=Providers({("shop", "p"): provider("generic", f"{receiver.url}/slow")}), timeout=3)
    c = make_canary([{"name": "a", "providerRef": {"name": "p"}}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await n.on_alert(c, Alert("info", "x"))
    assert loop.time() - started < 0.1
    assert n.pending == 1
    await n.drain(0.2)  # the receiver is slow: the task is cancelled, nothing raises
    assert n.pending == 0
    await n.aclose()


async def test_hold_sends_after_the_tick_with_the_decided_status(receiver: Receiver) -> None:
    n = Notifier(providers=Providers({("shop", "p"): provider("generic", f"{receiver.url}/g")}), **FAST)
    obj = {"metadata": {"name": "podinfo", "namespace": "shop"}}
    before = make_canary([{"name": "a", "providerRef": {"name": "p"}}],
                         {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 2})
    with n.hold(obj):
        await n.on_alert(before, Alert("error", "Failed checks threshold reached 3: request-success-rate 48.20 < 99"))
        assert n.pending == 0  # queued, not sent
        n.decided(before, CanaryStatus.model_validate(FAILED_STATUS))
    assert n.pending == 1
    await n.drain(5)
    (got,) = receiver.received
    assert got.body["phase"] == "Failed" and got.body["weight"] == 0
    assert got.body["check"] == "request-success-rate" and got.body["value"] == 48.2
    # a tick that decided nothing (status write failed) still sends, with the status it had
    with n.hold(obj):
        await n.on_alert(before, Alert("error", "again"))
    await n.drain(5)
    assert receiver.received[-1].body["phase"] == "Progressing"
    await n.aclose()
