"""canary.adapters.http: the egress policy on resolved addresses, no redirects, one retry policy,
and what may be shown of URLs and remote bodies (issue 10)."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest
from aiohttp import web

from canary.adapters import http
from canary.adapters.http import Egress, EgressDenied


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def two_servers():
    """`first` answers 302 to `second`; `hits` records every request each one got."""
    hits: dict[str, list[str]] = {"first": [], "second": []}
    ports = {"first": _free_port(), "second": _free_port()}
    runners = []

    def app(name: str) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            hits[name].append(request.method + " " + request.path)
            if name == "first" and request.path == "/redirect":
                raise web.HTTPFound(f"http://127.0.0.1:{ports['second']}/secret")
            if request.path.startswith("/status/"):
                return web.Response(status=int(request.path.rsplit("/", 1)[1]), text="try later")
            return web.Response(text=f"{name} body \x1b]52;c;ZXZpbA==\x07")
        a = web.Application()
        a.router.add_route("*", "/{tail:.*}", handle)
        return a

    for name in ("first", "second"):
        runner = web.AppRunner(app(name))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
        runners.append(runner)
    yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, hits
    for runner in runners:
        await runner.cleanup()
    await http.aclose_shared_clients()


async def test_a_redirect_is_returned_not_followed(two_servers) -> None:
    urls, hits = two_servers
    response = await http.request(http.client(), "POST", urls["first"] + "/redirect", json={})
    assert response.status_code == 302
    assert hits == {"first": ["POST /redirect"], "second": []}


async def test_the_retry_policy(two_servers) -> None:
    urls, hits = two_servers
    attempts = http.Attempts()
    response = await http.request(http.client(), "GET", urls["first"] + "/status/503", retries=2, backoff=0.01,
                                  attempts=attempts)
    assert response.status_code == 503 and attempts.count == 3
    attempts = http.Attempts()
    response = await http.request(http.client(), "GET", urls["first"] + "/status/400", retries=2, backoff=0.01,
                                  attempts=attempts)
    assert response.status_code == 400 and attempts.count == 1
    attempts = http.Attempts()
    with pytest.raises(httpx.ConnectError):
        await http.request(http.client(), "GET", f"http://127.0.0.1:{_free_port()}/", retries=1, backoff=0.01,
                           attempts=attempts)
    assert attempts.count == 2


async def test_a_denied_address_is_never_contacted_nor_retried(two_servers) -> None:
    urls, hits = two_servers
    deny_loopback = Egress.build(deny_cidrs=["127.0.0.0/8"])
    attempts = http.Attempts()
    with pytest.raises(EgressDenied, match="127.0.0.1"):
        await http.request(http.client(egress=deny_loopback), "GET", urls["first"] + "/", retries=3,
                           attempts=attempts)
    assert attempts.count == 1 and hits["first"] == []
    # the name is resolved and the resolved address checked: localhost is 127.0.0.1
    with pytest.raises(EgressDenied):
        await http.request(http.client(egress=deny_loopback), "GET", urls["first"].replace("127.0.0.1", "localhost"))
    # an allow list admits only what it names
    only_ten = Egress.build(allow_cidrs=["10.0.0.0/8"])
    with pytest.raises(EgressDenied, match="allow list"):
        await http.request(http.client(egress=only_ten), "GET", urls["first"] + "/")
    assert hits["first"] == []
    allowed = Egress.build(allow_hosts=["127.0.0.1"])
    assert (await http.request(http.client(egress=allowed), "GET", urls["first"] + "/")).status_code == 200


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254", "fd00:ec2::254",
                                     "100.100.100.200"])
def test_metadata_addresses_are_refused_by_default(address: str) -> None:
    with pytest.raises(EgressDenied):
        Egress().check_address("x", ipaddress.ip_address(address))
    if not address.startswith("::ffff:"):  # an explicit allow opens it
        Egress.build(allow_cidrs=[address + ("/128" if ":" in address else "/32")]).check_address(
            "x", ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal.", "metadata"])
def test_metadata_names_are_refused_by_default(host: str) -> None:
    with pytest.raises(EgressDenied):
        Egress().check_host(host)


def test_deny_hosts_cover_subdomains() -> None:
    egress = Egress.build(deny_hosts=[".corp.example"])
    for host in ("corp.example", "a.corp.example", "a.b.corp.example"):
        with pytest.raises(EgressDenied):
            egress.check_host(host)
    egress.check_host("notcorp.example")
    Egress().check_address("x", ipaddress.ip_address("10.1.2.3"))  # in-cluster addresses are fine


async def test_every_resolved_address_must_pass(monkeypatch) -> None:
    import asyncio

    async def two(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two)
    with pytest.raises(EgressDenied, match="169.254.169.254"):
        await Egress().resolve("rebind.example", 80)


async def test_the_connection_goes_to_the_checked_address() -> None:
    seen: list[tuple[str, str, object]] = []

    class Inner(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            seen.append((request.url.host, request.headers["host"], request.extensions.get("sni_hostname")))
            return httpx.Response(200)

    transport = http._CheckedTransport(Egress(), Inner())
    async with httpx.AsyncClient(transport=transport) as c:
        await c.get("https://localhost:8443/x")
    assert seen == [("127.0.0.1", "localhost:8443", "localhost")]


def test_what_may_be_shown() -> None:
    assert http.safe_url("https://user:pw@prom.example:9090/api?token=t#f") == "https://prom.example:9090/api"
    dirty = "ok \x1b]52;c;ZXZpbA==\x07 \x1b[31mred\x1b[0m \x9b2J bell\x07 nul\x00 c1\x85 tab\tnl\n end"
    assert http.clean(dirty) == "ok red bell nul c1 tab nl end"
    assert http.snippet("y" * 500) == "y" * 100 + "…"
    assert http.redact("GET http://u:hunter2@h failed: hunter2", ["hunter2", ""]) == "GET http://u:***@h failed: ***"
