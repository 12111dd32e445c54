"""The API client keeps alive every connection a burst opened (issue 12).

With httpx's default pool (100 open, 20 kept alive) a burst of 50 ticks opened 50 connections and
closed 30 of them, so each later burst paid 30 new TCP (and, against a real API server, TLS)
handshakes, on the operator and on the API server. A real HTTP/1.1 server on loopback counts the
connections it accepted."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from canary.adapters.kube import Kube


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.accepted += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802
        # long enough that the burst's requests overlap; a slow API server for the lease test
        time.sleep(0.0 if "/leases/" in self.path else self.server.delay)  # type: ignore[attr-defined]
        body = b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog: a burst of 50 connects at once


def _server(delay: float = 0.2) -> ThreadingHTTPServer:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.delay = delay  # type: ignore[attr-defined]
    srv.daemon_threads = True
    srv.accepted = 0  # type: ignore[attr-defined]
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


async def _bursts(kube: Kube, n: int, times: int) -> None:
    for _ in range(times):
        await asyncio.gather(*(kube.get("v1", "configmaps", "ns", "x") for _ in range(n)))


async def test_a_second_burst_reuses_the_connections_of_the_first():
    srv = _server()
    try:
        kube = Kube(f"http://127.0.0.1:{srv.server_address[1]}", connections=60)
        await _bursts(kube, 50, 3)
        await kube.aclose()
        # 50 at once need 50 connections; the later bursts open none
        assert srv.accepted == 50, srv.accepted
    finally:
        srv.shutdown()
        srv.server_close()


async def test_the_pool_bounds_the_connections_it_opens():
    srv = _server()
    try:
        kube = Kube(f"http://127.0.0.1:{srv.server_address[1]}", connections=10)
        started = time.monotonic()
        await _bursts(kube, 30, 1)
        await kube.aclose()
        assert srv.accepted == 10, srv.accepted
        assert time.monotonic() - started >= 0.55  # three rounds of 10
    finally:
        srv.shutdown()
        srv.server_close()


async def test_a_lease_renewal_does_not_wait_behind_the_ticks():
    """A replica must not lose its Lease because its renewal queued behind a burst of ticks."""
    srv = _server(delay=1.0)
    try:
        kube = Kube(f"http://127.0.0.1:{srv.server_address[1]}", connections=1)
        ticks = [asyncio.create_task(kube.get("v1", "configmaps", "ns", "x")) for _ in range(3)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await kube.get("coordination.k8s.io/v1", "leases", "ns", "x")
        took = time.monotonic() - started
        await asyncio.gather(*ticks)
        await kube.aclose()
        assert took < 0.5, f"the renewal waited {took:.1f}s behind the ticks"
    finally:
        srv.shutdown()
        srv.server_close()
