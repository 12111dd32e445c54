"""Webhooks against a real local HTTP server that records what it receives."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from aiohttp import web

from canary.adapters.webhooks import call_webhook, call_webhooks, hook_timeout, payload_for, send_event
from canary.models import Canary
from canary.types import Phase


@dataclass
class Received:
    path: str
    content_type: str
    body: dict[str, Any]


@dataclass
class HookServer:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    flaky_failures: dict[str, int] = field(default_factory=dict)  # path -> failures left

    def paths(self) -> list[str]:
        return [r.path for r in self.received]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server() -> AsyncIterator[HookServer]:
    srv = HookServer()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        srv.received.append(Received(request.path, request.headers.get("Content-Type", ""), body))
        name = request.match_info["name"]
        if name == "ok":
            return web.Response(status=200, text="all good")
        if name == "accepted":
            return web.Response(status=202)
        if name == "nocontent":
            return web.Response(status=204)
        if name == "error":
            return web.Response(status=500, text="load test failed: " + "x" * 2000)
        if name == "forbidden":
            return web.Response(status=403, text="gate closed")
        if name == "notimpl":
            return web.Response(status=501, text="not implemented")
        if name in ("flaky", "ratelimited"):
            left = srv.flaky_failures.get(request.path, 0)
            if left > 0:
                srv.flaky_failures[request.path] = left - 1
                if name == "ratelimited":
                    return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
                return web.Response(status=503, text="try later")
            return web.Response(status=200, text="recovered")
        if name == "slow":
            await asyncio.sleep(3)
            return web.Response(status=200)
        if name == "redirect":
            raise web.HTTPTemporaryRedirect("/hook/ok")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_post("/hook/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def canary(webhooks: list[dict[str, Any]]) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "iterations": 3, "webhooks": webhooks},
            },
        }
    )


def hook(server: HookServer, name: str, path: str, type_: str = "rollout", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"{server.url}/hook/{path}", "type": type_, **extra}


FAST = {"backoff": 0.01}


async def test_payload_headers_and_2xx_success(server: HookServer) -> None:
    c = canary([
        hook(server, "load", "ok", "", metadata={"cmd": "hey -z 1m http://podinfo"}),
        hook(server, "acc", "accepted", "rollout"),
        hook(server, "pre", "ok", "pre-rollout"),
    ])
    results = await call_webhooks(c, "", Phase.PROGRESSING, "85d557f47b")
    assert [(r.name, r.type, r.ok, r.status_code) for r in results] == [
        ("load", "rollout", True, 200),
        ("acc", "rollout", True, 202),
    ]
    assert "all good" not in results[0].message  # the body of a success is never stored
    assert server.paths() == ["/hook/ok", "/hook/accepted"]
    first = server.received[0]
    assert first.content_type == "application/json"
    assert first.body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": "85d557f47b",
        "metadata": {"cmd": "hey -z 1m http://podinfo"},
    }
    assert server.received[1].body["metadata"] == {}


@pytest.mark.parametrize(("path", "code"), [("nocontent", 204), ("error", 500), ("forbidden", 403), ("notimpl", 501)])
async def test_failures_carry_status_and_truncated_body(server: HookServer, path: str, code: int) -> None:
    (r,) = await call_webhooks(canary([hook(server, "h", path, "confirm-rollout")]), "confirm-rollout",
                               "Waiting", "abc")
    assert not r.ok and r.status_code == code and r.type == "confirm-rollout"
    assert str(code) in r.message and "webhook h" in r.message
    if path == "error":
        assert "load test failed" in r.message and len(r.message) < 500
    assert len(server.received) == 1  # retries default to 0; 501 and 4xx are never retried


async def test_gating_hooks_stop_at_first_failure(server: HookServer) -> None:
    c = canary([hook(server, "a", "ok"), hook(server, "b", "error"), hook(server, "c", "ok")])
    results = await call_webhooks(c, "rollout", "Progressing", "x")
    assert [r.name for r in results] == ["a", "b"]
    results = await call_webhooks(c, "rollout", "Progressing", "x", stop_early=False)
    assert [r.ok for r in results] == [True, False, True]


async def test_rollback_stops_at_first_success_post_rollout_calls_all(server: HookServer) -> None:
    c = canary([
        hook(server, "r1", "forbidden", "rollback"),
        hook(server, "r2", "ok", "rollback"),
        hook(server, "r3", "ok", "rollback"),
        hook(server, "p1", "error", "post-rollout"),
        hook(server, "p2", "ok", "post-rollout"),
    ])
    assert [r.name for r in await call_webhooks(c, "rollback", "Progressing", "x")] == ["r1", "r2"]
    assert [r.ok for r in await call_webhooks(c, "post-rollout", "Succeeded", "x")] == [False, True]


async def test_retries_on_5xx_then_success(server: HookServer) -> None:
    server.flaky_failures["/hook/flaky"] = 2
    (r,) = await call_webhooks(canary([hook(server, "f", "flaky", retries=2)]), "rollout", "Progressing", "x", **FAST)
    assert r.ok and r.status_code == 200
    assert server.paths() == ["/hook/flaky"] * 3


async def test_retries_exhausted_reports_last_answer(server: HookServer) -> None:
    server.flaky_failures["/hook/flaky"] = 10
    (r,) = await call_webhooks(canary([hook(server, "f", "flaky", retries=1)]), "rollout", "Progressing", "x", **FAST)
    assert not r.ok and r.status_code == 503 and "try later" in r.message and "2 attempt" in r.message
    assert len(server.received) == 2


async def test_429_is_retried(server: HookServer) -> None:
    server.flaky_failures["/hook/ratelimited"] = 1
    (r,) = await call_webhooks(canary([hook(server, "rl", "ratelimited", retries=1)]), "rollout", "P", "x", **FAST)
    assert r.ok and len(server.received) == 2


async def test_no_retry_without_retries(server: HookServer) -> None:
    server.flaky_failures["/hook/flaky"] = 1
    (r,) = await call_webhooks(canary([hook(server, "f", "flaky")]), "rollout", "P", "x", **FAST)
    assert not r.ok and r.status_code == 503 and len(server.received) == 1


async def test_timeout_from_duration_string(server: HookServer) -> None:
    started = time.monotonic()
    (r,) = await call_webhooks(canary([hook(server, "s", "slow", timeout="300ms", retries=3)]), "rollout", "P", "x",
                               **FAST)
    assert time.monotonic() - started < 2.0
    assert not r.ok and r.status_code is None and "timed out after 0.3s" in r.message
    assert len(server.received) == 1  # a read timeout is not retried


async def test_connection_refused_is_a_failed_result_not_an_exception() -> None:
    url = f"http://127.0.0.1:{_free_port()}/x?token=secret"
    (r,) = await call_webhooks(canary([{"name": "down", "url": url, "retries": 1}]), "rollout", "P", "x", **FAST)
    assert not r.ok and r.status_code is None
    assert "ConnectError" in r.message and "2 attempt" in r.message
    assert "secret" not in r.message  # query strings are left out of messages


async def test_invalid_url_and_timeout_are_failed_results() -> None:
    (r,) = await call_webhooks(canary([{"name": "bad", "url": "http://[not-a-host/"}]), "rollout", "P", "x")
    assert not r.ok and "webhook bad" in r.message
    r = await call_webhook({"name": "t", "url": "http://127.0.0.1:1/", "timeout": "10x"}, {})
    assert not r.ok and "invalid timeout" in r.message


def test_hook_timeout() -> None:
    assert hook_timeout(None) == 10.0
    assert hook_timeout("") == 10.0
    assert hook_timeout("5") == 10.0  # Flagger: shorter than 2 characters means 10s
    assert hook_timeout("0s") == 10.0
    assert hook_timeout("1m30s") == 90.0
    assert hook_timeout("250ms") == 0.25
    with pytest.raises(ValueError):
        hook_timeout("ten")


async def test_a_redirect_is_a_failure_and_never_followed(server: HookServer) -> None:
    (r,) = await call_webhooks(canary([hook(server, "rd", "redirect")]), "rollout", "P", "x")
    assert not r.ok and r.status_code == 307 and "redirects are not followed" in r.message
    assert server.paths() == ["/hook/redirect"]


async def test_failure_bodies_are_capped_and_cleaned(server: HookServer) -> None:
    (r,) = await call_webhooks(canary([hook(server, "e", "error")]), "rollout", "P", "x")
    body = r.message.split("returned 500: ", 1)[1]
    assert not r.ok and body.startswith("load test failed: xxx") and body.endswith("…") and len(body) == 101


async def test_metadata_addresses_are_refused_before_sending() -> None:
    (r,) = await call_webhooks(canary([{"name": "imds", "url": "http://169.254.169.254/latest/meta-data/"}]),
                               "rollout", "P", "x")
    assert not r.ok and "EgressDenied" in r.message and "169.254.169.254" in r.message


async def test_disable_tls_against_self_signed_https_is_attempted() -> None:
    # No TLS server here: check that disableTLS takes the insecure client path and still
    # turns the connection failure into a result.
    url = f"https://127.0.0.1:{_free_port()}/"
    (r,) = await call_webhooks(canary([{"name": "tls", "url": url, "disableTLS": True}]), "rollout", "P", "x")
    assert not r.ok and "ConnectError" in r.message


async def test_caller_client_is_used(server: HookServer) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as client:
        (r,) = await call_webhooks(canary([hook(server, "h", "ok")]), "rollout", "P", "x", client=client)
    assert r.ok and seen == [f"{server.url}/hook/ok"]


async def test_event_payload(server: HookServer) -> None:
    c = canary([
        hook(server, "ev", "ok", "event", metadata={"team": "a", "eventType": "spoofed", "timestamp": "0"}),
        hook(server, "ev2", "error", "event"),
        hook(server, "not-event", "ok", "rollout"),
    ])
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    results = await send_event(c, "New revision detected", "Normal", Phase.PROGRESSING, "abc", now=now)
    assert [(r.name, r.ok) for r in results] == [("ev", True), ("ev2", False)]
    assert server.paths() == ["/hook/ok", "/hook/error"]
    body = server.received[0].body
    assert set(body) == {"name", "namespace", "phase", "checksum", "metadata"}
    assert body["phase"] == "Progressing" and body["checksum"] == "abc"
    assert body["metadata"] == {
        "team": "a",
        "eventMessage": "New revision detected",
        "eventType": "Normal",
        "timestamp": str(int(now.timestamp() * 1000)),
    }
    assert body["metadata"]["timestamp"] == "1767323045678"


async def test_event_timestamp_is_now_in_ms(server: HookServer) -> None:
    before = int(time.time() * 1000)
    await send_event(canary([hook(server, "ev", "ok", "event")]), "m", "Warning", "Failed", "c")
    after = int(time.time() * 1000)
    ts = server.received[0].body["metadata"]["timestamp"]
    assert isinstance(ts, str) and before <= int(ts) <= after


async def test_event_default_url_when_no_event_hooks(server: HookServer) -> None:
    results = await send_event(canary([]), "m", "Normal", "Initialized", "c", default_url=f"{server.url}/hook/ok")
    assert [r.ok for r in results] == [True] and server.received[0].body["metadata"]["eventMessage"] == "m"
    assert await send_event(canary([]), "m", "Normal", "Initialized", "c") == ()


def test_payload_for_plain_dict() -> None:
    assert payload_for({"metadata": {"name": "n", "namespace": "ns"}}, "Waiting", "c", None) == {
        "name": "n", "namespace": "ns", "phase": "Waiting", "checksum": "c", "metadata": {},
    }
