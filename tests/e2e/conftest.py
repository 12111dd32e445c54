"""End-to-end fixtures: the operator as a real process against the testbed."""

from __future__ import annotations

import copy
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testbed import ops

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def operator(testbed, request):
    port = free_port()
    op = ops.OperatorProcess(name=f"e2e-{request.module.__name__.rsplit('.', 1)[-1]}-{port}", metrics_port=port).start()
    yield op
    op.stop()
    if op.proc and op.proc.returncode not in (0, -15, None):
        print(op.log_tail(80))


def deployment(name: str, image: str = "ghcr.io/stefanprodan/podinfo:6.0.0", replicas: int = 1,
               annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"sim.canary.dev/error-rate": "0", "sim.canary.dev/latency-ms": "10",
                                    **(annotations or {})},
                },
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 9898}]}]},
            },
        },
    }


def canary(name: str, interval: str = "2s", threshold: int = 2, max_weight: int = 50, step_weight: int = 10,
           metrics: list | None = None, webhooks: list | None = None, **spec_extra) -> dict:
    analysis = {
        "interval": interval,
        "threshold": threshold,
        "maxWeight": max_weight,
        "stepWeight": step_weight,
        "metrics": metrics if metrics is not None else [
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s"},
            {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s"},
        ],
    }
    if webhooks:
        analysis["webhooks"] = webhooks
    spec = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "progressDeadlineSeconds": 60,
        "service": {"port": 9898, "targetPort": 9898},
        "analysis": analysis,
    }
    spec.update(copy.deepcopy(spec_extra))
    return {"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "metadata": {"name": name}, "spec": spec}


class HookServer:
    """A local webhook receiver: records payloads per path and answers by path.

    /gate/<key>: 200 if the gate is open, else 403 (closed by default)
    /fail: 500; /ok: 200; /rollback/<key>: 200 if opened (rollback), else 404
    """

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.open: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except ValueError:
                    body = {}
                server.calls.append((self.path, body))
                code = 200
                if self.path.startswith("/gate/"):
                    code = 200 if self.path[6:] in server.open else 403
                elif self.path.startswith("/rollback/"):
                    code = 200 if self.path[10:] in server.open else 404
                elif self.path == "/fail":
                    code = 500
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def paths(self, prefix: str) -> list[dict]:
        return [body for path, body in list(self.calls) if path.startswith(prefix)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks():
    s = HookServer()
    yield s
    s.close()


def routed(api_client, namespace: str, name: str, want, timeout: float = 10.0):
    """The VirtualService's (primary, canary) weights once they are `want` (or the last seen after
    `timeout`): a decision is written to the status before its route, so a test that has just
    seen the decision may read the route a moment early."""
    import time as _time

    from tests.e2e.test_operator import vs_weights

    deadline = _time.monotonic() + timeout
    while True:
        got = vs_weights(api_client, namespace, name)
        if got == want or _time.monotonic() > deadline:
            return got
        _time.sleep(0.2)
