"""The dashboard's HTTP server (the standard library's threading server: a handful of local
browsers, server-sent events, no framework needed).

Every request first passes the Host check: only the address the server is bound to (and
`localhost` for a loopback address) may be named, so a web page of another origin that has
its DNS name point at 127.0.0.1 (DNS rebinding) is answered 403. Pages and data are GETs; the
only writes are the control verbs' annotations, only with --allow-actions, only as a POST that
carries the per-process random token (which only the served pages hold) and an Origin of the
server itself."""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import secrets
import socket
import threading
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from canary.cli.api import EXIT_OK, CliError, Ctx
from canary.cli.control import COMMANDS, cmd_command
from canary.cli.dashboard.pages import HEADERS, STATIC, page, static
from canary.cli.dashboard.state import State
from canary.text import printable

log = logging.getLogger(__name__)

MAX_STREAMS = 64  # event streams open at once
HEARTBEAT = 15.0  # seconds between keep-alive comments of an idle stream
MAX_BODY = 4096
REASON_MAX = 256


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_allowed(header: str | None, address: str, port: int) -> bool:
    """Whether a request's Host names this server: its address and port (or localhost for a
    loopback address; any IP literal for a wildcard address, never another DNS name)."""
    if not header:
        return False
    parts = urlsplit("//" + header.strip())
    try:
        host, got = (parts.hostname or ""), parts.port
    except ValueError:
        return False
    if got != port:
        return False
    bound = _ip(address)
    asked = _ip(host)
    if bound is not None and bound.is_unspecified:
        return asked is not None or host == "localhost"
    if asked is not None and bound is not None:
        return asked == bound
    if host == "localhost":
        return bound is None or bound.is_loopback
    return host.lower() == address.lower()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: State, address: str, port: int, *, allow_actions: bool, ctx: Ctx, context: str):
        if ":" in address:
            self.address_family = socket.AF_INET6
        super().__init__((address, port), Handler)
        self.state, self.ctx, self.context = state, ctx, context
        self.address = address
        self.port = int(self.server_address[1])
        self.token = secrets.token_urlsafe(32) if allow_actions else ""
        self.streams = 0
        self.streams_lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        bound = _ip(self.address)
        host = f"[{self.address}]" if ":" in self.address else self.address
        if bound is not None and bound.is_unspecified:
            host = "127.0.0.1" if bound.version == 4 else "[::1]"
        return f"http://{host}:{self.port}/"

    def scope(self) -> str:
        return f"namespace {self.state.namespace}" if self.state.namespace else "all namespaces"


class Handler(BaseHTTPRequestHandler):
    server: Server
    def version_string(self) -> str:
        return "canary-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ---- answers ---------------------------------------------------------------------------

    def _head(self, code: int, content_type: str, length: int | None = None) -> None:
        self.send_response(code)
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self._head(code, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(data).encode(), "application/json")

    def _error(self, code: int, message: str) -> None:
        self._send(code, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _allowed(self) -> bool:
        if host_allowed(self.headers.get("Host"), self.server.address, self.server.port):
            return True
        self._error(403, "forbidden: this Host is not the dashboard's address")
        return False

    # ---- GET -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        srv = self.server
        if not parts:
            self._send(200, page("list", context=srv.context, scope=srv.scope(), token=srv.token).encode(),
                       "text/html; charset=utf-8")
        elif parts[0] == "canary" and len(parts) == 3:
            self._send(200, page("canary", context=srv.context, scope=srv.scope(), key=f"{parts[1]}/{parts[2]}",
                                 token=srv.token).encode(), "text/html; charset=utf-8")
        elif parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC:
            self._send(200, static(parts[1]) or b"", STATIC[parts[1]])
        elif parts[:2] == ["api", "canaries"] and len(parts) in (2, 4):
            key: str | None = f"{parts[2]}/{parts[3]}" if len(parts) == 4 else None
            _, body = srv.state.snapshot(key)
            data = json.loads(body)
            if key is not None and data["canary"] is None:
                self._json(404, {"error": f"canary {key} is not known (yet)"})
            else:
                self._json(200, data)
        elif parts[:2] == ["api", "events"] and len(parts) in (2, 4):
            self._events(f"{parts[2]}/{parts[3]}" if len(parts) == 4 else None)
        elif parts == ["healthz"]:
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._error(404, "not found")

    do_HEAD = do_GET

    def _events(self, key: str | None) -> None:
        """Server-sent events: a snapshot, then each change of this page, as it happens."""
        srv = self.server
        if self.command == "HEAD":
            self._head(200, "text/event-stream; charset=utf-8")
            return
        with srv.streams_lock:
            if srv.streams >= MAX_STREAMS:
                self._error(503, "too many open event streams")
                return
            srv.streams += 1
        try:
            self._head(200, "text/event-stream; charset=utf-8")
            self.wfile.write(b"retry: 2000\n\n")
            kinds = ("canary", "deleted", "problem") if key is None else ("detail", "deleted", "problem")
            seq = self._snapshot(key)
            while not srv.stopping.is_set():
                events = srv.state.wait(seq, HEARTBEAT)
                if events is None:  # fell behind what is kept: start again
                    seq = self._snapshot(key)
                    continue
                if not events:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                seq = events[-1].seq
                latest: dict[tuple[str, str], int] = {}  # several changes of one card: its latest once
                for ev in events:
                    if ev.kind in kinds and (key is None or ev.kind == "problem" or ev.key == key):
                        ident = (ev.kind, str(ev.seq) if ev.kind == "problem" else ev.key)  # problems: each
                        latest.pop(ident, None)
                        latest[ident] = ev.seq
                by_seq = {ev.seq: ev for ev in events}
                out = []
                for (kind, which), at in latest.items():
                    ev = by_seq[at]
                    data = ev.data if kind in ("problem", "deleted") else srv.state.current(kind, which)
                    if data is not None:
                        out.append(f"id: {at}\nevent: {kind}\ndata: {data}\n\n")
                if out:
                    self.wfile.write("".join(out).encode())
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the browser went away
        finally:
            with srv.streams_lock:
                srv.streams -= 1

    def _snapshot(self, key: str | None) -> int:
        seq, body = self.server.state.snapshot(key)
        self.wfile.write(f"id: {seq}\nevent: snapshot\ndata: {body}\n\n".encode())
        self.wfile.flush()
        return seq

    # ---- POST: the control verbs -------------------------------------------------------------

    def do_POST(self) -> None:
        if not self._allowed():
            return
        srv = self.server
        if not srv.token:
            self._json(403, {"ok": False, "message": "read-only dashboard: actions need --allow-actions"})
            return
        given = self.headers.get("X-Canary-Token") or ""
        if not hmac.compare_digest(given.encode(), srv.token.encode()):
            self._json(403, {"ok": False, "message": "forbidden: missing or wrong token"})
            return
        origin = self.headers.get("Origin") or ""
        if origin != f"http://{self.headers.get('Host')}":
            self._json(403, {"ok": False, "message": "forbidden: the request does not come from the dashboard"})
            return
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if len(parts) != 5 or parts[:2] != ["api", "actions"] or parts[4] not in COMMANDS:
            self._json(404, {"ok": False, "message": "not found"})
            return
        _, _, namespace, name, command = parts
        if (namespace, name) not in srv.state.store.canaries:
            self._json(404, {"ok": False, "message": f"canary {namespace}/{name} is not shown here"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"ok": False, "message": "request too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self._json(400, {"ok": False, "message": "the body is not a JSON object"})
            return
        reason = printable(str(body.get("reason") or ""))[:REASON_MAX]
        weight = body.get("weight")
        if command == "set-weight" and (not isinstance(weight, int) or isinstance(weight, bool)
                                        or not 0 <= weight <= 100):
            self._json(400, {"ok": False, "message": "set-weight needs a weight from 0 to 100"})
            return
        self._json(*run_command(srv.state, command, namespace, name, reason,
                                weight if command == "set-weight" else None))


def run_command(state: State, command: str, namespace: str, name: str, reason: str,
                weight: int | None) -> tuple[int, dict[str, Any]]:
    """The CLI's own verb (precheck, annotation, its message): (HTTP status, answer)."""
    out, err = io.StringIO(), io.StringIO()
    ctx = Ctx(api_factory=lambda: state.api, out=out, err=err)
    args = Namespace(cmd=command, name=name, namespace=namespace, weight=weight, reason=reason, by=None,
                     force=False, wait=False, timeout=60.0)
    try:
        code = cmd_command(args, ctx)
    except CliError as e:
        return 409, {"ok": False, "message": str(e)}
    message = (out.getvalue() + err.getvalue()).strip()
    return (200 if code == EXIT_OK else 409), {"ok": code == EXIT_OK, "message": message}
