"""The metric servers' gate (issue 12): bounded concurrency per server and identical queries in
flight sent once, against a real local HTTP server."""

from __future__ import annotations

import asyncio

import pytest

from canary.adapters.metrics.gate import QueryGate, gate
from canary.adapters.metrics.prometheus import PrometheusClient
from tests.unit.test_prometheus import Reply, prom  # noqa: F401 (the fixture)


async def test_identical_queries_in_flight_are_sent_once(prom):  # noqa: F811
    prom.answer("slow_q", Reply(delay=0.2))
    client = PrometheusClient(prom.url)
    values = await asyncio.gather(*(client.query("slow_q") for _ in range(20)))
    assert values == [1.0] * 20
    assert prom.queries().count("slow_q") == 1
    # nothing is cached beyond the flight: the next query is sent again
    assert await client.query("slow_q") == 1.0
    assert prom.queries().count("slow_q") == 2


async def test_different_credentials_never_share_an_answer(prom):  # noqa: F811
    prom.answer("q", Reply(delay=0.2))
    a, b = PrometheusClient(prom.url, token="team-a"), PrometheusClient(prom.url, token="team-b")
    await asyncio.gather(a.query("q"), b.query("q"), a.query("q"))
    sent = [h.get("Authorization") for _, q, h in prom.seen if q == "q"]
    assert sorted(sent) == ["Bearer team-a", "Bearer team-b"]


async def test_an_error_reaches_every_caller_of_the_flight(prom):  # noqa: F811
    prom.answer("bad", Reply(status=400, body={"status": "error", "errorType": "bad_data", "error": "parse error"},
                             delay=0.1))
    client = PrometheusClient(prom.url, retries=0)
    results = await asyncio.gather(*(client.query("bad") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, Exception) and "parse error" in str(r) for r in results), results
    assert prom.queries().count("bad") == 1


async def test_queries_to_one_server_are_bounded(prom):  # noqa: F811
    in_flight = peak = 0
    for i in range(80):
        prom.answer(f"q{i}", Reply(delay=0.05))
    loop_gate = gate()
    loop_gate.max_per_server = 8
    loop_gate._slots.clear()
    original = PrometheusClient._query

    async def counting(self, query):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(self, query)
        finally:
            in_flight -= 1

    client = PrometheusClient(prom.url)
    try:
        PrometheusClient._query = counting  # type: ignore[method-assign]
        values = await asyncio.gather(*(client.query(f"q{i}") for i in range(80)))
    finally:
        PrometheusClient._query = original  # type: ignore[method-assign]
    assert values == [1.0] * 80
    assert peak == 8


async def test_a_cancelled_sender_does_not_cancel_the_callers_sharing_its_flight():
    g = QueryGate()
    started = asyncio.Event()
    sends = 0

    async def send():
        nonlocal sends
        sends += 1
        started.set()
        await asyncio.sleep(0.1)
        return sends

    first = asyncio.create_task(g.run("s", "k", send))
    await started.wait()
    second = asyncio.create_task(g.run("s", "k", send))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == 2  # it sent the query itself
    assert g._flights == {}
