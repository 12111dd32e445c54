"""Alerts and the operator's metrics, end to end on the testbed.

One operator process (its own metrics port, scraped by the testbed Prometheus as job
"e2e-alerts"), AlertProviders of every type pointing at a local receiver (one with its address
in a Secret, in another namespace), and one Canary with mixed alert severities that goes
through a good release (promoted) and a bad one (rolled back on request-success-rate).
The release runs once (module fixture); the tests read what it left behind.
"""

from __future__ import annotations

import time
import uuid

import kubernetes
import pytest

from canary.reconciler import Deps
from testbed import ops
from tests.e2e.conftest import HookServer, canary, deployment

pytestmark = pytest.mark.testbed

JOB = "e2e-alerts"
METRICS_PORT = 19211
IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"
IMAGE3 = "ghcr.io/stefanprodan/podinfo:6.0.2"

START = "New revision detected, progressing canary analysis."
PROMOTED = "Canary analysis completed successfully, promotion finished."
ROLLBACK = "Failed checks threshold reached"

# receiver path -> (provider type, severity of the alerts entry; None = not set)
RECEIVERS = {
    "/slack": ("slack", "info"),
    "/teams": ("msteams", "warn"),
    "/discord": ("discord", "error"),
    "/rocket": ("rocket", None),
    "/gchat": ("gchat", "info"),
    "/googlechat": ("googlechat", "info"),
    "/generic-secret": ("generic", "info"),
}


def _phase(api, ns: str, name: str = "podinfo") -> str | None:
    return ops.canary_status(api, ns, name).get("phase")


def _wait_phase(api, ns: str, want: set[str], timeout: float, op: ops.OperatorProcess) -> str:
    try:
        return ops.wait_until(lambda: _phase(api, ns) in want and _phase(api, ns), timeout, f"phase in {want}")
    except TimeoutError:
        print(op.log_tail(80))
        raise


@pytest.fixture(scope="module")
def release(testbed, api_client):
    ns = f"e2e-alerts-{uuid.uuid4().hex[:5]}"
    ops_ns = f"{ns}-ops"
    for n in (ns, ops_ns):
        ops.ensure_namespace(api_client, n)
    hooks = HookServer()
    op = ops.OperatorProcess(name=JOB, metrics_port=METRICS_PORT).start()
    record: dict = {"ns": ns, "hooks": hooks, "op": op, "weights": set()}
    try:
        alerts = []
        for path, (type_, severity) in RECEIVERS.items():
            name = path.strip("/")
            spec = {"type": type_, "address": f"{hooks.url}{path}"}
            if type_ == "slack":
                spec.update(channel="releases", username="canary-bot")
            provider_ns = ns
            if path == "/generic-secret":
                # the Secret's address overrides spec.address; both live in the provider's namespace
                provider_ns = ops_ns
                spec = {"type": "generic", "address": f"{hooks.url}/wrong", "secretRef": {"name": "alert-url"}}
                ops.apply(api_client, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alert-url"},
                                       "stringData": {"address": f"{hooks.url}{path}", "token": "t0ken"}}, ops_ns)
            ops.apply(api_client, {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider",
                                   "metadata": {"name": name}, "spec": spec}, provider_ns)
            entry = {"name": name, "providerRef": {"name": name}}
            if provider_ns != ns:
                entry["providerRef"]["namespace"] = provider_ns
            if severity is not None:
                entry["severity"] = severity
            alerts.append(entry)
        c = canary("podinfo", interval="2s", threshold=2, max_weight=30, step_weight=10)
        c["spec"]["analysis"]["alerts"] = alerts
        ops.apply(api_client, deployment("podinfo"), ns)
        ops.apply(api_client, c, ns)
        _wait_phase(api_client, ns, {"Initialized"}, 90, op)

        # a good release: promoted
        ops.patch_deployment(api_client, ns, "podinfo", image=IMAGE2)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            st = ops.canary_status(api_client, ns, "podinfo")
            record["weights"].add(st.get("canaryWeight", 0))
            if st.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.3)
        record["good"] = ops.canary_status(api_client, ns, "podinfo")
        record["promoted_at"] = time.time()
        # give Prometheus (1 s scrapes) a moment with the Succeeded phase before the next run
        time.sleep(4)

        # a bad release: rolled back on the success rate
        ops.patch_deployment(api_client, ns, "podinfo", image=IMAGE3, annotations={"sim.canary.dev/error-rate": "0.5"})
        _wait_phase(api_client, ns, {"Progressing"}, 60, op)
        _wait_phase(api_client, ns, {"Failed", "Succeeded"}, 150, op)
        record["bad"] = ops.canary_status(api_client, ns, "podinfo")
        # the alerts go out in the background right after the tick: wait for the last one
        try:
            ops.wait_until(lambda: all(any(ROLLBACK in _text(b, p) for b in _received(hooks, p)) for p in RECEIVERS),
                           20, "the rollback alert at every receiver")
        except TimeoutError:
            pass  # the tests below say which receiver lacks it
        yield record
    finally:
        op.stop()
        if op.proc and op.proc.returncode not in (0, -15, None):
            print(op.log_tail(80))
        hooks.close()
        core = kubernetes.client.CoreV1Api(api_client)
        for n in (ns, ops_ns):
            try:
                core.delete_namespace(n)
            except kubernetes.client.ApiException:
                pass


def _text(body: dict, path: str) -> str:
    """The message of an alert payload, whatever its shape."""
    if "blocks" in body:  # Slack's Block Kit: the header, then the message
        return body["blocks"][1]["text"]["text"]
    if "attachments" in body:
        return body["attachments"][0]["text"]
    if body.get("@type") == "MessageCard":
        return body["sections"][0]["activityTitle"]
    if "cards" in body:
        return body["cards"][0]["sections"][0]["widgets"][0]["textParagraph"]["text"]
    return body.get("message", "")


def _received(hooks: HookServer, path: str) -> list[dict]:
    # discord gets the Slack payload at <address>/slack
    want = path + "/slack" if path == "/discord" else path
    return [body for p, body in list(hooks.calls) if p == want]


def test_releases_went_as_planned(release):
    assert release["good"]["phase"] == "Succeeded", release["good"]
    assert release["bad"]["phase"] == "Failed", release["bad"]
    assert release["bad"]["lastFailure"]["check"] == "request-success-rate"


@pytest.mark.parametrize("path", list(RECEIVERS))
def test_each_receiver_gets_its_shape_and_severities(release, path):
    type_, severity = RECEIVERS[path]
    bodies = _received(release["hooks"], path)
    texts = [_text(b, path) for b in bodies]
    got_start = any(START in t for t in texts)
    got_promoted = any(PROMOTED in t for t in texts)
    rollbacks = [b for b, t in zip(bodies, texts) if ROLLBACK in t]
    assert rollbacks, f"{path}: no rollback alert in {texts}"
    if severity in (None, "info"):  # a missing severity means info: everything
        assert got_start and got_promoted, f"{path}: {texts}"
    else:  # warn / error entries get no info alerts
        assert not got_start and not got_promoted, f"{path}: {texts}"
    assert len(rollbacks) == 1, f"{path}: the rollback was alerted {len(rollbacks)} times"
    body = rollbacks[0]
    # the deciding check and its value are in the message
    assert "request-success-rate" in _text(body, path)
    if type_ == "slack":  # Block Kit: header and message, then the facts beside the colour bar
        assert set(body) == {"channel", "username", "icon_emoji", "text", "blocks", "attachments"}
        assert (body["channel"], body["username"]) == ("releases", "canary-bot")
        assert body["blocks"][0]["text"]["text"] == f"podinfo.{release['ns']}"
        assert ROLLBACK in body["text"]  # the notification's text
        att = body["attachments"][0]
        assert att["color"] == "danger"
        facts = dict(f["text"].split("\n", 1) for f in att["blocks"][0]["fields"])
        assert facts["*Target*"] == f"Deployment/podinfo.{release['ns']}"
        check, value = facts["*Failed check*"].split(" = ")
        assert check == "request-success-rate" and float(value) < 99
        assert IMAGE3 in att["blocks"][1]["text"]["text"]
        assert att["blocks"][-1]["type"] == "context" and "canary-operator" in att["blocks"][-1]["elements"][0]["text"]
    elif type_ in ("discord", "rocket"):  # their Slack-compatible webhooks read the legacy attachment
        assert set(body) == {"channel", "username", "icon_emoji", "attachments"}
        assert "fallback" in body["attachments"][0]
        att = body["attachments"][0]
        assert att["author_name"] == f"podinfo.{release['ns']}"
        assert att["color"] == ("danger" if type_ == "discord" else "#FF0000")
        fields = {f["title"]: f["value"] for f in att["fields"]}
        assert fields["Target"] == f"Deployment/podinfo.{release['ns']}"
        check, value = fields["Failed check"].split(" = ")  # dense: "<check> = <value>"
        assert check == "request-success-rate"
        assert float(value) < 99
        assert IMAGE3 in fields["Image"]
    elif type_ == "msteams":
        assert body["@type"] == "MessageCard" and body["themeColor"] == "FF0000"
        section = body["sections"][0]
        assert section["activitySubtitle"] == f"podinfo.{release['ns']}"
        facts = {f["name"]: f["value"] for f in section["facts"]}
        assert facts["Failed check"] == "request-success-rate" and float(facts["Value"]) < 99
    elif type_ in ("gchat", "googlechat"):
        card = body["cards"][0]
        assert card["header"]["subtitle"] == f"podinfo.{release['ns']}"
        texts = [w["textParagraph"]["text"] for w in card["sections"][0]["widgets"]]
        assert "<b>Failed check</b>: request-success-rate" in texts
    else:  # generic, its address from the Secret (nothing reached spec.address)
        assert body["canary"] == "podinfo" and body["namespace"] == release["ns"]
        assert body["severity"] == "error" and body["phase"] == "Failed" and body["weight"] == 0
        assert body["check"] == "request-success-rate" and body["value"] < 99
        assert body["target"] == f"Deployment/podinfo.{release['ns']}" and IMAGE3 in body["image"]
        assert not release["hooks"].paths("/wrong")


def test_the_promotion_alert_shows_the_new_status(release):
    (promoted,) = [b for b in _received(release["hooks"], "/generic-secret") if PROMOTED in b["message"]]
    assert promoted["phase"] == "Succeeded" and promoted["check"] is None
    assert IMAGE2 in promoted["image"]
    assert promoted["fields"]["Traffic routing"] == "Weight step: 10 max: 30"


# ---- the operator's series through the testbed Prometheus ---------------------------------------


def _sel(release, **extra: str) -> str:
    labels = {"job": JOB, "namespace": release["ns"], "name": "podinfo", **extra}
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def _eventually(query: str, ok, timeout: float = 20) -> float:
    def check():
        value = ops.prom_value(query)
        return (value,) if value is not None and ok(value) else None  # a tuple: 0 is a result too

    try:
        return ops.wait_until(check, timeout, query, interval=1)[0]
    except TimeoutError:
        pytest.fail(f"{query}: last result {ops.prom_query(query)}")


def test_phase_series_showed_succeeded_after_the_promotion(release):
    window = max(10, int(time.time() - release["promoted_at"]) + 5)
    _eventually(f'max_over_time(canary_phase{{{_sel(release, phase="Succeeded")}}}[{window}s])', lambda v: v == 1)
    # and now the Canary is Failed: one-hot
    _eventually(f'canary_phase{{{_sel(release, phase="Failed")}}}', lambda v: v == 1)
    _eventually(f'sum(canary_phase{{{_sel(release)}}})', lambda v: v == 1)


def test_weight_rose_during_the_run(release):
    assert {10, 20, 30} <= release["weights"], release["weights"]
    _eventually(f'max_over_time(canary_weight{{{_sel(release)}}}[15m])', lambda v: v >= 10)
    _eventually(f'canary_weight{{{_sel(release)}}}', lambda v: v == 0)


def test_promotions_and_rollbacks_counted(release):
    _eventually(f'canary_promotions_total{{{_sel(release)}}}', lambda v: v == 1)
    _eventually(f'canary_rollbacks_total{{{_sel(release)}}}', lambda v: v == 1)
    _eventually(f'increase(canary_rollbacks_total{{{_sel(release)}}}[15m])', lambda v: v > 0)
    _eventually(f'canary_analysis_duration_seconds_count{{{_sel(release)}}}', lambda v: v == 2)
    _eventually(f'flagger_canary_status{{job="{JOB}",namespace="{release["ns"]}",name="podinfo"}}',
                lambda v: v == 2)


def test_operator_health_series(release):
    _eventually(f'canary_operator_info{{job="{JOB}"}}', lambda v: v == 1)
    _eventually(f'canary_operator_api_requests_total{{job="{JOB}",verb="patch"}}', lambda v: v > 0)
    _eventually(f'canary_operator_reconcile_duration_seconds_count{{job="{JOB}"}}', lambda v: v > 0)
    _eventually(f'canary_operator_scheduler_queue_depth{{job="{JOB}"}}', lambda v: v >= 0)
    sent = _eventually(f'sum(canary_operator_alerts_total{{job="{JOB}",result="sent"}})', lambda v: v > 0)
    assert sent >= len(RECEIVERS)


@pytest.mark.skipif("observe_metrics" not in Deps.__dataclass_fields__,
                    reason="the reconciler does not call OperatorMetrics.observe_metric_run yet")
def test_check_values_recorded(release):
    _eventually(f'max_over_time(canary_check_value{{{_sel(release, check="request-success-rate")}}}[15m])',
                lambda v: v >= 0)
    _eventually(f'min_over_time(canary_check_value{{{_sel(release, check="request-success-rate")}}}[15m])',
                lambda v: v < 99)
    _eventually(f'canary_check_threshold{{{_sel(release, check="request-success-rate", bound="min")}}}',
                lambda v: v == 99)
    _eventually(f'canary_operator_metric_query_duration_seconds_count{{job="{JOB}"}}', lambda v: v > 0)
