"""`canary dashboard` without a browser: the page data (hostile strings kept as text, the
charts as numbers), the HTML shells escaped, the Host check against DNS rebinding, and the
server itself on a loopback port (security headers, server-sent events from one watch, actions
refused without --allow-actions, without the token or from another origin)."""

from __future__ import annotations

import copy
import http.client
import json
import queue
import socket
import threading
import time

import pytest

from canary import commands
from canary.cli import main
from canary.cli.api import CliError, Ctx, NotServed
from canary.cli.dashboard.model import detail, spark, summary
from canary.cli.dashboard.pages import CSP, page
from canary.cli.dashboard.server import Server, host_allowed
from canary.cli.dashboard.state import State
from canary.cli.store import Store
from canary.cli.watch import Change
from tests.unit.test_cli import DUR_OK, SR_BAD, SR_OK, canary, ledger_entry

HOSTILE = '<img src=x onerror="alert(1)">&amp;</script>'


def released() -> dict:
    obj = canary(weight=20, ledger=[
        ledger_entry(0, "start", weight=0, message="new revision"),
        ledger_entry(10, "advance 10", checks=[SR_OK, DUR_OK]),
        ledger_entry(20, "halt", checks=[SR_BAD, DUR_OK], message=HOSTILE),
        ledger_entry(30, "advance 20", weight=20, checks=[SR_OK, DUR_OK]),
    ], lastStepTime="2026-03-01T09:59:30Z")
    obj["spec"]["analysis"]["webhooks"] = [{"name": "approve", "type": "confirm-promotion", "url": "http://x/"}]
    obj["metadata"]["annotations"] = {"canary.dev/pause": json.dumps({"by": "eve", "reason": HOSTILE})}
    return obj


# ---- the data of the pages --------------------------------------------------------------------


def test_a_card_keeps_hostile_strings_as_plain_text_and_draws_checks_as_numbers():
    card = summary(released(), Store(), routed=20)
    assert card["key"] == "test/podinfo" and card["phase"] == "Progressing" and card["icon"] == "◐"
    assert (card["weight"], card["routed"], card["maxWeight"]) == (20, 20, 50)
    assert card["canary"]["pods"] == "not seen" and card["primary"]["deployment"] == "podinfo-primary"
    assert card["gates"] == [{"name": "approve", "type": "confirm-promotion", "open": False}]
    sr = card["checks"][0]
    assert sr["name"] == "request-success-rate" and sr["ok"] and sr["min"] == 99
    # the sparkline: three values, the bound as a line, the failing one marked
    assert len(sr["spark"]["lines"]) == 1 and len(sr["spark"]["lines"][0].split()) == 3
    assert len(sr["spark"]["bounds"]) == 1 and len(sr["spark"]["fail"]) == 1
    geometry = json.dumps(sr["spark"])
    assert all(ch in "0123456789.,-: []{}\"whlinesboundsfailgap" for ch in geometry), geometry
    # the hostile message is there, as text, for textContent
    assert any(HOSTILE in d["text"] for d in card["decisions"])
    assert card["nextAnalysisAt"] is not None and card["interval"] == 10


def test_the_canary_page_has_the_explain_timeline_drawn():
    page_data = detail(released(), Store())
    assert page_data["why"].startswith("Now: ")
    assert [e["text"].split(":")[0] for e in page_data["entries"]] == ["start", "advance 10", "halt", "advance 20"]
    assert page_data["entries"][2]["checks"][0]["ok"] is False
    t = page_data["timeline"]
    assert [b["phase"] for b in t["bands"]] == ["Progressing"] * 4
    assert [m["name"] for m in t["metrics"]] == ["request-success-rate", "request-duration"]
    # the weight as a step line: 0 0 10 10 10 then up to 20
    ys = [float(p.split(",")[1]) for p in t["weight"][0].split()]
    assert ys[0] == ys[1] > ys[-1] and len(ys) == 7
    assert {"key": "canary.dev/pause", "value": json.dumps({"by": "eve", "reason": HOSTILE})} in page_data["annotations"]


def test_control_characters_and_long_strings_are_cut():
    obj = released()
    obj["status"]["ledger"][-1]["message"] = "\x1b[31mred\x1b[0m" + "x" * 5000
    text = summary(obj, Store())["decisions"][0]["text"]
    assert "\x1b" not in text and len(text) <= 300 and text.endswith("...")


def test_spark_of_gaps_and_flat_series():
    sp = spark([1.0, None, 1.0, 1.0], [True, True, False, True], None, None)
    assert len(sp["lines"]) == 2 and sp["gaps"] == [40.0] and len(sp["fail"]) == 1 and sp["bounds"] == []
    assert spark([], [], 1.0, 2.0)["lines"] == []


# ---- the HTML and the Host check ------------------------------------------------------------------


def test_the_shell_escapes_what_it_carries_and_holds_the_token_only_with_actions():
    html_text = page("canary", context='ctx"><script>x</script>', scope="namespace <b>", key='a/"><img>')
    assert "<script>x" not in html_text and "<b>" not in html_text and '"><img>' not in html_text
    assert "&lt;script&gt;x" in html_text and 'data-key="a/&quot;&gt;&lt;img&gt;"' in html_text
    assert "canary-token" not in html_text and "read-only" in html_text
    assert html_text.count("<script") == 1 and '<script src="/static/app.js" defer>' in html_text
    assert 'name="canary-token" content="t0k"' in page("list", context="c", scope="s", token="t0k")
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP and "default-src 'none'" in CSP


@pytest.mark.parametrize("host,address,ok", [
    ("127.0.0.1:3100", "127.0.0.1", True),
    ("localhost:3100", "127.0.0.1", True),
    ("LOCALHOST:3100", "127.0.0.1", True),  # host names are case-insensitive
    ("evil.example:3100", "127.0.0.1", False),  # DNS rebinding: a name that resolves to 127.0.0.1
    ("127.0.0.1:3101", "127.0.0.1", False),
    ("127.0.0.1", "127.0.0.1", False),
    ("", "127.0.0.1", False),
    (None, "127.0.0.1", False),
    ("127.0.0.1:3100@evil", "127.0.0.1", False),
    ("[::1]:3100", "::1", True),
    ("localhost:3100", "::1", True),
    ("10.1.2.3:3100", "0.0.0.0", True),
    ("localhost:3100", "0.0.0.0", True),
    ("rebind.example:3100", "0.0.0.0", False),
    ("10.1.2.3:3100", "10.1.2.3", True),
    ("localhost:3100", "10.1.2.3", False),
    ("127.0.0.1:3100", "10.1.2.3", False),
])
def test_the_host_header_must_name_the_dashboard(host, address, ok):
    assert host_allowed(host, address, 3100) is ok


# ---- the server, on a loopback port -----------------------------------------------------------------


class WatchApi:
    """Canaries, and a watch that delivers them and then what the test puts in `changes`."""

    def __init__(self, *objs: dict):
        self.namespace, self.user, self.context = "test", "alice", "unit"
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
        self.changes: queue.Queue[Change] = queue.Queue()
        self.patches: list[tuple[str, str, dict]] = []
        self.watches = 0

    def list_canaries(self, namespace):
        return [o for (ns, _), o in self.objects.items() if namespace in (None, ns)]

    def get_canary(self, namespace, name):
        return copy.deepcopy(self.objects[(namespace, name)])

    def get_deployment(self, namespace, name):
        return None

    def annotate(self, namespace, name, annotations):
        self.patches.append((namespace, name, annotations))
        return self.objects[(namespace, name)]

    def watch(self, namespace, name, related, idle):
        self.watches += 1
        for obj in self.list_canaries(namespace):
            yield Change("canary", "ADDED", obj)
        while True:
            try:
                yield self.changes.get(timeout=idle)
            except queue.Empty:
                yield None


@pytest.fixture
def served():
    def start(api: WatchApi, allow_actions: bool = False) -> Server:
        state = State(api, "test")
        server = Server(state, "127.0.0.1", 0, allow_actions=allow_actions, ctx=Ctx(api_factory=lambda: api),
                        context="unit")
        state.start()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        deadline = time.monotonic() + 5
        while not state.cards and time.monotonic() < deadline:
            time.sleep(0.02)
        return server

    servers: list[Server] = []
    yield start
    for s in servers:
        s.stopping.set()
        s.state.stop()
        s.shutdown()
        s.server_close()


def request(server: Server, method: str, path: str, host: str | None = None, headers: dict | None = None,
            body: bytes | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_pages_carry_the_security_headers_and_a_rebinding_host_is_refused(served):
    server = served(WatchApi(released()))
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Security-Policy"] == CSP and headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff" and b"canary-token" not in body
    status, headers, body = request(server, "GET", "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    # no sink that parses markup: data goes in as text only
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"DOMParser", b"eval(",
                 b"new Function", b"createContextualFragment", b"srcdoc"):
        assert sink not in body, sink
    assert headers["Server"] == "canary-dashboard"
    status, _, body = request(server, "GET", "/api/canaries")
    data = json.loads(body)
    assert status == 200 and [c["key"] for c in data["canaries"]] == ["test/podinfo"]
    assert request(server, "GET", "/api/canaries/test/podinfo")[0] == 200
    assert request(server, "GET", "/api/canaries/test/nope")[0] == 404
    assert request(server, "GET", "/static/../../pages.py")[0] == 404
    for host in ("evil.example:%d" % server.port, "127.0.0.1:1", ""):
        status, headers, _ = request(server, "GET", "/api/canaries", host=host)
        assert status == 403 and headers["Content-Security-Policy"] == CSP


def test_read_only_refuses_every_post(served):
    api = WatchApi(released())
    server = served(api)
    origin = {"Origin": f"http://127.0.0.1:{server.port}", "Content-Type": "application/json"}
    status, _, body = request(server, "POST", "/api/actions/test/podinfo/abort", headers=origin, body=b"{}")
    assert status == 403 and "--allow-actions" in json.loads(body)["message"] and api.patches == []


def test_actions_need_the_token_and_the_dashboards_origin(served):
    api = WatchApi(released())
    server = served(api, allow_actions=True)
    status, _, body = request(server, "GET", "/canary/test/podinfo")
    token = body.decode().split('name="canary-token" content="')[1].split('"')[0]
    assert status == 200 and len(token) >= 40
    good = {"Origin": f"http://127.0.0.1:{server.port}", "X-Canary-Token": token}
    path = "/api/actions/test/podinfo/pause"
    payload = json.dumps({"reason": "look <b>closer</b>"}).encode()
    for headers in ({"Origin": good["Origin"]}, {**good, "X-Canary-Token": token[:-1] + "x"},
                    {**good, "Origin": "http://evil.example"}, {"X-Canary-Token": token}):
        assert request(server, "POST", path, headers=headers, body=payload)[0] == 403
    assert request(server, "POST", path, host="evil.example:%d" % server.port, headers=good, body=payload)[0] == 403
    assert api.patches == []
    assert request(server, "POST", "/api/actions/test/other/pause", headers=good, body=payload)[0] == 404
    assert request(server, "POST", "/api/actions/test/podinfo/delete", headers=good, body=payload)[0] == 404
    assert request(server, "POST", "/api/actions/test/podinfo/set-weight", headers=good,
                   body=b'{"weight": 400}')[0] == 400
    status, _, body = request(server, "POST", path, headers=good, body=payload)
    answer = json.loads(body)
    assert status == 200 and answer["ok"] and "canary.dev/pause set on test/podinfo" in answer["message"]
    [(ns, name, annotations)] = api.patches
    assert (ns, name) == ("test", "podinfo")
    value = json.loads(annotations[commands.annotation("pause")])
    assert value["reason"] == "look <b>closer</b>" and value["by"] == "alice"
    # the CLI's precheck: a Progressing canary cannot be retried
    status, _, body = request(server, "POST", "/api/actions/test/podinfo/retry", headers=good, body=b"{}")
    assert status == 409 and not json.loads(body)["ok"] and len(api.patches) == 1


def read_events(sock_file, count: int) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    kind, data = "", ""
    while len(out) < count:
        line = sock_file.readline().decode()
        if not line:
            break
        line = line.rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and kind:
            out.append((kind, json.loads(data)))
            kind, data = "", ""
    return out


def test_events_stream_a_snapshot_then_each_change_from_one_watch(served):
    api = WatchApi(released())
    server = served(api)
    streams = []
    for path in ("/api/events", "/api/events", "/api/events/test/podinfo"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        f = s.makefile("rb")
        while f.readline() not in (b"\r\n", b""):
            pass  # the headers
        streams.append((s, f))
    firsts = [read_events(f, 1)[0] for _, f in streams]
    assert [k for k, _ in firsts] == ["snapshot"] * 3
    assert firsts[0][1]["canaries"][0]["weight"] == 20 and firsts[2][1]["canary"]["timeline"] is not None
    changed = released()
    changed["status"]["canaryWeight"] = 30
    changed["metadata"]["resourceVersion"] = "2"
    api.changes.put(Change("canary", "MODIFIED", changed))
    (kind, card), = read_events(streams[0][1], 1)
    assert kind == "canary" and card["weight"] == 30
    assert read_events(streams[1][1], 1)[0][1]["weight"] == 30
    (kind, page_data), = read_events(streams[2][1], 1)
    assert kind == "detail" and page_data["weight"] == 30
    api.changes.put(Change("canary", "DELETED", changed))
    assert read_events(streams[0][1], 1) == [("deleted", {"key": "test/podinfo"})]
    assert api.watches == 1  # three browsers, one watch
    for s, f in streams:
        f.close()
        s.close()


def test_the_command_reports_an_unusable_address_in_one_line(capsys):
    ctx = Ctx(api_factory=lambda: WatchApi(released()))
    assert main(["dashboard", "--address", "example.com"], ctx) == 3
    assert "give an IP address" in capsys.readouterr().err


class BrokenWatchApi(WatchApi):
    def watch(self, namespace, name, related, idle):
        yield Change("canary", "ADDED", released())
        raise CliError("forbidden: canaries.canary.dev is forbidden: User \"bob\" cannot watch")


def test_a_watch_that_stops_is_said_on_the_page_and_what_was_seen_stays(served):
    server = served(BrokenWatchApi(released()))
    deadline = time.monotonic() + 5
    while not server.state.error and time.monotonic() < deadline:
        time.sleep(0.02)
    data = json.loads(request(server, "GET", "/api/canaries")[2])
    assert data["errors"] == ['forbidden: canaries.canary.dev is forbidden: User "bob" cannot watch']
    assert [c["key"] for c in data["canaries"]] == ["test/podinfo"]


class NotServedApi(WatchApi):
    def list_canaries(self, namespace):
        raise NotServed("`canaries.canary.dev` is not served by this cluster (context unit): are the CRDs installed?")


def test_the_command_fails_in_one_line_before_serving_when_canaries_cannot_be_listed(capsys):
    ctx = Ctx(api_factory=lambda: NotServedApi())
    assert main(["dashboard", "--port", "0"], ctx) == 3
    assert capsys.readouterr().err.strip() == ("error: `canaries.canary.dev` is not served by this cluster "
                                               "(context unit): are the CRDs installed?")


def test_a_stream_behind_several_changes_sends_the_latest_card_once(served):
    api = WatchApi(released())
    server = served(api)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    f = s.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    assert read_events(f, 1)[0][0] == "snapshot"

    def version(weight: int) -> Change:
        obj = released()
        obj["status"]["canaryWeight"] = weight
        obj["metadata"]["resourceVersion"] = str(weight)
        return Change("canary", "MODIFIED", obj)

    with server.state.cond:  # the stream cannot send until all three are in
        for weight in (30, 40, 50):
            server.state.apply(version(weight))
    assert [(k, d["weight"]) for k, d in read_events(f, 1)] == [("canary", 50)]
    server.state.apply(version(60))
    assert [(k, d["weight"]) for k, d in read_events(f, 1)] == [("canary", 60)]  # nothing of 30 or 40 left
    assert len(server.state.events[-1].data) == 0  # the history holds no copies of the cards
    f.close()
    s.close()
