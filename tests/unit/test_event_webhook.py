"""--event-webhook (chart value eventWebhook, Flagger's -event-webhook): the Events of Canaries
without an `event` webhook are posted to it, through a real local HTTP receiver."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from aiohttp import web

from canary import cluster
from canary.cli import build_parser
from canary.models import Canary
from canary.types import Event

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def make_canary(webhooks: list | None = None) -> Canary:
    analysis: dict = {"interval": "1m", "threshold": 2}
    if webhooks:
        analysis["webhooks"] = webhooks
    return Canary.model_validate({
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898}, "analysis": analysis}})


class Events:
    def __init__(self):
        self.emitted: list[tuple] = []

    async def emit(self, obj, type_, reason, message, now):
        self.emitted.append((type_, reason, message))


async def receiver():
    got: list[tuple[str, dict]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((request.path, await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", got


async def apply_event(deps, canary: Canary) -> None:
    await cluster.apply(deps, canary, canary.model_dump(by_alias=True), None, None,  # type: ignore[arg-type]
                        Event("Warning", "Rollback", "Rolling back podinfo.shop"), NOW)
    await cluster.drain_event_posts()  # posted beside the tick


async def test_events_of_canaries_without_event_hooks_go_to_the_event_webhook():
    runner, url, got = await receiver()
    try:
        deps = SimpleNamespace(events=Events(), event_webhook=f"{url}/events")
        await apply_event(deps, make_canary())
        assert deps.events.emitted == [("Warning", "Rollback", "Rolling back podinfo.shop")]
        ((path, body),) = got
        assert path == "/events" and (body["name"], body["namespace"]) == ("podinfo", "shop")
        assert body["metadata"]["eventMessage"] == "Rolling back podinfo.shop"
        assert body["metadata"]["eventType"] == "Warning"
        # a Canary's own event webhooks replace the global one
        got.clear()
        await apply_event(deps, make_canary([{"name": "own", "type": "event", "url": f"{url}/own"}]))
        assert [p for p, _ in got] == ["/own"]
        # without the flag nothing is posted
        got.clear()
        await apply_event(SimpleNamespace(events=Events(), event_webhook=None), make_canary())
        assert got == []
    finally:
        await runner.cleanup()


def test_the_flag():
    parser = build_parser()
    assert parser.parse_args(["operator", "--event-webhook", "https://e.example/x"]).event_webhook == "https://e.example/x"
    assert parser.parse_args(["operator"]).event_webhook is None


async def test_a_slow_event_receiver_does_not_hold_up_the_tick():
    """A tarpitting receiver (a tenant's address or the global one) answered after 3 s: the tick
    waited for it. Now the post goes beside the tick and still arrives."""
    import asyncio
    import time

    got: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        got.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        deps = SimpleNamespace(events=Events(), event_webhook=f"http://127.0.0.1:{port}/events")
        started = time.monotonic()
        await cluster.apply(deps, make_canary(), make_canary().model_dump(by_alias=True), None, None,  # type: ignore[arg-type]
                            Event("Warning", "Rollback", "Rolling back podinfo.shop"), NOW)
        assert time.monotonic() - started < 1.0
        assert deps.events.emitted and got == []
        await cluster.drain_event_posts(timeout=10)
        assert got == ["/events"]
    finally:
        await runner.cleanup()
