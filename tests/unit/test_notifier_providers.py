"""The provider modules one by one: escaping, Teams Workflows, Alertmanager, PagerDuty, Opsgenie,
message templates, the cluster name, and what the Notifier never repeats (bodies, redirects)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import web

from canary.adapters.notifiers import (
    AlertInfo,
    AlertTemplateError,
    Notifier,
    Target,
    provider_for,
    render_link,
    render_message,
    types,
)
from canary.adapters.notifiers import alertmanager, msteams, opsgenie, pagerduty
from canary.adapters.notifiers.text import clean, markdown, slack
from canary.types import Alert
from tests.unit.test_notifiers import FAST, Providers, _serve, make_canary, provider

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
SPOOF = "<https://evil.example|Approve> [Approve](https://evil.example) & \x1b]52;c;aGk=\x07"


def info(severity: str = "error", **kw: Any) -> AlertInfo:
    base: dict[str, Any] = dict(canary="podinfo", namespace="shop", severity=severity,
                                message="Failed checks threshold reached 3", phase="Failed", weight=0,
                                target="Deployment/podinfo.shop", check="request-success-rate", value=48.2,
                                failure="request-success-rate 48.20 < 99", failed_checks=3, threshold=3,
                                image="ghcr.io/podinfo:6.0.1", cluster="prod-eu", timestamp=NOW)
    base.update(kw)
    return AlertInfo(**base)


def bodies(kind: str, i: AlertInfo, **target: Any) -> list[Any]:
    t = Target(name="shop/p", type=kind, address=target.pop("address", "https://hooks.example/x"), **target)
    return [r.body for r in provider_for(kind).requests(t, i)]


def strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


# ---- escaping ------------------------------------------------------------------------------


def test_escape_functions() -> None:
    assert slack("a <b|c> & d") == "a &lt;b|c&gt; &amp; d"
    assert markdown("[x](http://e) *b* _i_") == r"\[x\]\(http://e\) \*b\* \_i\_"
    assert markdown("a<b") == "a&lt;b"
    assert clean("ok\x1b[31m\x07\x9b\nline\ttab") == "ok\nline tab"  # whole escape sequences go
    assert clean("copy \x1b]52;c;aGk=\x07this") == "copy this"  # an OSC 52 clipboard write
    assert len(clean("x" * 5000)) == 3000


@pytest.mark.parametrize("kind", ["slack", "discord", "rocket", "msteams", "msteams-workflows"])
def test_no_link_spoofing_in_chat_text(kind: str) -> None:
    """A tenant's text (the Canary's message, a failure reason) never becomes a link or markup."""
    i = info(message=SPOOF, failure=SPOOF, canary="a<b>")
    texts = " ".join(strings(bodies(kind, i)))
    assert "<https://evil.example|Approve>" not in texts
    assert "&lt;https://evil.example|Approve&gt;" in texts or "&lt;https://evil.example\\|Approve&gt;" in texts
    assert "\x1b" not in texts and "\x07" not in texts
    assert "a<b>" not in texts
    if kind in ("discord", "msteams", "msteams-workflows"):  # markdown readers
        assert "[Approve](https://evil.example)" not in texts
        assert r"\[Approve\]\(https://evil.example\)" in texts


def test_html_receivers_escape_too() -> None:
    texts = " ".join(strings(bodies("gchat", info(message=SPOOF))))
    assert "<https://evil" not in texts and "&lt;https://evil.example|Approve&gt;" in texts


# ---- Teams ------------------------------------------------------------------------------------


def test_teams_workflows_adaptive_card() -> None:
    (body,) = bodies("msteams-workflows", info(link="https://grafana.example/d/x"))
    assert body["type"] == "message"
    (att,) = body["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    title, message, facts = card["body"]
    assert title["text"] == "podinfo.shop \\(prod-eu\\)" and title["color"] == "Attention"
    assert message["text"] == "Failed checks threshold reached 3"
    assert {"title": "Cluster", "value": "prod-eu"} in facts["facts"]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Details", "url": "https://grafana.example/d/x"}]
    assert json.loads(json.dumps(body)) == body


def test_teams_message_card_keeps_flaggers_shape_and_adds_the_link() -> None:
    (card,) = bodies("msteams", info(link="https://grafana.example/d/x"))
    assert card["@type"] == "MessageCard" and card["themeColor"] == "FF0000"
    assert card["potentialAction"][0]["targets"] == [{"os": "default", "uri": "https://grafana.example/d/x"}]
    assert msteams.message_card(info("info"))["themeColor"] == "0076D7"


# ---- incident tools ---------------------------------------------------------------------------


def test_alertmanager_fires_on_failure_and_resolves_on_success() -> None:
    assert alertmanager.url("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert alertmanager.url("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"
    (fire,) = bodies("alertmanager", info(), address="http://am:9093")
    (alert,) = fire
    assert alert["labels"] == {"alertname": "CanaryRelease", "canary": "podinfo", "namespace": "shop",
                               "severity": "critical", "cluster": "prod-eu"}
    assert alert["annotations"]["summary"] == "Failed checks threshold reached 3"
    assert alert["annotations"]["check"] == "request-success-rate" and alert["annotations"]["value"] == "48.2"
    assert alert["startsAt"] == "2026-03-01T12:00:00Z" and alert["endsAt"] == "2026-03-02T12:00:00Z"
    (warn,) = bodies("alertmanager", info("warn", message="Canary is waiting for approval."))[0]
    assert warn["labels"]["severity"] == "warning"
    (resolve,) = bodies("alertmanager", info("info", phase="Succeeded", message="promotion finished"))
    assert [a["labels"]["severity"] for a in resolve] == ["warning", "critical"]
    assert all(a["endsAt"] == "2026-03-01T12:00:00Z" for a in resolve)
    assert {k: v for k, v in resolve[1]["labels"].items()} == alert["labels"]  # same identity: resolves it
    # info messages of a running release are not alerts
    assert bodies("alertmanager", info("info", phase="Progressing", message="New revision detected")) == []


def test_pagerduty_events_v2() -> None:
    (trigger,) = bodies("pagerduty", info(link="https://g.example/x"), token="R0UTING")
    assert trigger["routing_key"] == "R0UTING" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "canary-operator/prod-eu/shop/podinfo"
    payload = trigger["payload"]
    assert payload["severity"] == "error" and payload["source"] == "prod-eu"
    assert payload["summary"] == "podinfo.shop (prod-eu): Failed checks threshold reached 3"
    assert payload["component"] == "Deployment/podinfo.shop" and payload["class"] == "request-success-rate"
    assert payload["custom_details"]["Value"] == "48.2"
    assert trigger["links"] == [{"href": "https://g.example/x", "text": "Details"}]
    assert bodies("pagerduty", info("warn"), token="R")[0]["payload"]["severity"] == "warning"
    (resolve,) = bodies("pagerduty", info("info", phase="Succeeded"), token="R0UTING")
    assert resolve == {"routing_key": "R0UTING", "event_action": "resolve",
                       "dedup_key": "canary-operator/prod-eu/shop/podinfo"}
    assert pagerduty.DEFAULT_ADDRESS == "https://events.pagerduty.com/v2/enqueue"


def test_opsgenie_create_and_close() -> None:
    t = Target(name="shop/p", type="opsgenie", address=opsgenie.DEFAULT_ADDRESS, token="KEY")
    (create,) = provider_for("opsgenie").requests(t, info())
    assert create.url == "https://api.opsgenie.com/v2/alerts"
    assert create.headers == {"Authorization": "GenieKey KEY"}
    body = create.body
    assert body["alias"] == "canary-operator/prod-eu/shop/podinfo" and body["priority"] == "P2"
    assert len(body["message"]) <= 130 and body["tags"] == ["canary-operator", "shop", "prod-eu"]
    assert body["details"]["Failed check"] == "request-success-rate"
    (close,) = provider_for("opsgenie").requests(t, info("info", phase="Succeeded"))
    assert close.url == ("https://api.opsgenie.com/v2/alerts/canary-operator%2Fprod-eu%2Fshop%2Fpodinfo"
                         "/close?identifierType=alias")
    assert provider_for("opsgenie").requests(t, info("warn"))[0].body["priority"] == "P3"
    assert provider_for("opsgenie").requests(t, info("info", phase="Progressing")) == []
    long = info(message="x" * 500)
    assert len(provider_for("opsgenie").requests(t, long)[0].body["message"]) == 130


def test_factory_knows_every_model_type() -> None:
    from typing import get_args

    from canary.models import AlertProviderType

    assert set(types()) == set(get_args(AlertProviderType))
    with pytest.raises(ValueError, match="unsupported alert provider type 'pager'"):
        provider_for("pager")


# ---- templates ------------------------------------------------------------------------------


def test_message_template_uses_the_release_fields() -> None:
    t = ("[{{ cluster }}] {{ canary }}.{{ namespace }} {{ phase }} at {{ weight }}%: "
         "{{ check }}={{ value }} ({{ reason }}) images {{ images }} {{- /* trailing */}} {{ link }}")
    got = render_message(t, info(link="https://g/x"))
    assert got == ("[prod-eu] podinfo.shop Failed at 0%: request-success-rate=48.2 "
                   "(request-success-rate 48.20 < 99) images ghcr.io/podinfo:6.0.1 https://g/x")
    assert render_message("{{name}} {{ severity }}: {{ message }}", info()) == \
        "podinfo error: Failed checks threshold reached 3"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ .canary }}", r"write \{\{ canary \}\} instead of \{\{ .canary \}\}"),
        ("{{ canery }}", "unknown field 'canery'; available: canary, name"),
        ("{{ canary", "unclosed action"),
        ("{{ canary | upper }}", "alert template fields: canary, name"),
        ("{{ variables.x }}", "no variables"),
    ],
)
def test_bad_template_is_a_clear_error(template: str, error: str) -> None:
    with pytest.raises(AlertTemplateError, match=error) as exc:
        render_message(template, info())
    assert str(exc.value).startswith("template: ") and "query" not in str(exc.value)


def test_link_template_encodes_values_and_wants_http() -> None:
    link = render_link("https://grafana.example/d/canary?var-ns={{ namespace }}&var-c={{ canary }}",
                       info(canary="a b&c=d"))
    assert link == "https://grafana.example/d/canary?var-ns=shop&var-c=a%20b%26c%3Dd"
    for bad in ("javascript:alert(1)//{{ canary }}", "{{ canary }}", "https://x/<{{ cluster }}>"):
        with pytest.raises(AlertTemplateError, match="linkTemplate"):
            render_link(bad, info())


# ---- the Notifier: cluster name, templates, bodies and redirects --------------------------


async def _receiver(status: int = 200, body: str = "ok", headers: dict | None = None):
    got: list[Any] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        got.append((request.path, await request.json()))
        return web.Response(status=status, text=body, headers=headers or {})

    runner, url = await _serve(handle)
    return runner, url, got


async def test_cluster_name_and_templates_reach_the_receiver() -> None:
    runner, url, got = await _receiver()
    try:
        providers = Providers({("shop", "p"): provider(
            "generic", f"{url}/hook", template="{{ canary }} in {{ cluster }}: {{ message }}",
            linkTemplate="https://grafana.example/d/x?c={{ canary }}")})
        seen = []
        n = Notifier(providers=providers, cluster_name="prod-eu", on_delivery=seen.append, **FAST)
        (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "boom"))
        assert r.ok
        ((_, body),) = got
        assert body["cluster"] == "prod-eu" and body["fields"]["Cluster"] == "prod-eu"
        assert body["message"] == "podinfo in prod-eu: boom"
        assert body["link"] == "https://grafana.example/d/x?c=podinfo"
        assert [d.ok for d in seen] == [True]
        await n.aclose()
    finally:
        await runner.cleanup()


async def test_a_bad_template_is_reported_and_the_default_message_sent() -> None:
    runner, url, got = await _receiver()
    try:
        providers = Providers({("shop", "p"): provider("slack", f"{url}/hook", template="{{ .phase }}")})
        seen = []
        n = Notifier(providers=providers, on_delivery=seen.append, **FAST)
        (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "boom"))
        assert r.ok and got[0][1]["blocks"][1]["text"]["text"] == "boom"
        bad = [d for d in seen if not d.ok]
        assert len(bad) == 1 and "bad template" in bad[0].message and "{{ phase }}" in bad[0].message
        await n.aclose()
    finally:
        await runner.cleanup()


async def test_error_bodies_are_never_repeated() -> None:
    runner, url, _ = await _receiver(status=400, body="<https://evil|Approve> secret-echo")
    try:
        n = Notifier(providers=Providers({("shop", "p"): provider("generic", f"{url}/x")}), **FAST)
        (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x"))
        assert not r.ok and r.status_code == 400
        assert r.message == "HTTP 400 after 1 attempt(s)"
        await n.aclose()
    finally:
        await runner.cleanup()


async def test_redirects_are_not_followed() -> None:
    target_runner, target_url, target_got = await _receiver()
    runner, url, got = await _receiver(status=307, headers={"Location": f"{target_url}/stolen"})
    try:
        n = Notifier(providers=Providers({("shop", "p"): provider("generic", f"{url}/x")}), **FAST)
        (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x"))
        assert not r.ok and r.status_code == 307 and "redirects are not followed" in r.message
        assert len(got) == 1 and target_got == []
        await n.aclose()
    finally:
        await runner.cleanup()
        await target_runner.cleanup()


async def test_pagerduty_without_a_routing_key_is_refused_and_default_address_used() -> None:
    from tests.unit.test_notifiers import FakeKube

    seen = []
    providers = Providers({("shop", "pd"): provider("pagerduty", secretRef={"name": "pd"}),
                           ("shop", "og"): provider("opsgenie", secretRef={"name": "og"})})
    kube = FakeKube({("shop", "og"): {"token": "KEY"}})
    n = Notifier(kube, providers, on_delivery=seen.append, **FAST)
    assert await n.resolve("shop", "pd") is None
    assert [(d.provider, d.message) for d in seen] == [("shop/pd", "no token")]
    og = await n.resolve("shop", "og")
    assert og is not None and og.address == opsgenie.DEFAULT_ADDRESS and og.token == "KEY"


async def test_info_alerts_an_incident_tool_does_not_want_are_not_sent() -> None:
    runner, url, got = await _receiver()
    try:
        n = Notifier(providers=Providers({("shop", "p"): provider("alertmanager", url)}), **FAST)
        c = make_canary([{"name": "a", "providerRef": {"name": "p"}}], {"phase": "Progressing"})
        (r,) = await n.notify(c, Alert("info", "New revision detected"))
        assert r.ok and r.message == "nothing to send for this alert" and got == []
        await n.aclose()
    finally:
        await runner.cleanup()


async def test_alerts_go_through_the_egress_policy() -> None:
    """The shared HTTP layer refuses link-local addresses (cloud metadata): nothing is sent there."""
    n = Notifier(providers=Providers({("shop", "p"): provider("generic", "http://169.254.169.254/latest/meta-data")}),
                 **FAST)
    (r,) = await n.notify(make_canary([{"name": "a", "providerRef": {"name": "p"}}]), Alert("error", "x"))
    assert not r.ok and r.message == "refused by the egress policy (host 169.254.169.254)"
    await n.aclose()
