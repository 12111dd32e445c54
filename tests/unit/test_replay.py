"""`canary simulate --from-prometheus` without a cluster: times (RFC 3339, relative, now), the
window cut into analysis steps, the range answers of a small local stand-in for Prometheus
mapped onto the steps (builtin and MetricTemplate queries rendered as the operator renders
them), the scenario built from them, and the errors a person gets."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from canary.cli import main
from canary.cli.api import CliError, Ctx
from canary.cli.parser import relative_times
from canary.cli.replay import Replay, parse_time, scenario_of, window
from canary.models import Canary

NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)


def test_times_rfc3339_relative_now_and_unix():
    assert parse_time("2026-03-01T09:30:00Z", NOW, "--start") == NOW - timedelta(minutes=30)
    assert parse_time("2026-03-01T10:30:00+01:00", NOW, "--start") == NOW - timedelta(minutes=30)
    assert parse_time("2026-03-01T09:30:00", NOW, "--start") == NOW - timedelta(minutes=30)  # UTC
    assert parse_time("-30m", NOW, "--start") == NOW - timedelta(minutes=30)
    assert parse_time("-1h30m", NOW, "--start") == NOW - timedelta(minutes=90)
    assert parse_time("now", NOW, "--end") == NOW
    assert parse_time(str(NOW.timestamp()), NOW, "--end") == NOW
    for bad in ("yesterday", "-30 minutes", "", "-", "2026-13-01T00:00:00Z", "+30m"):
        with pytest.raises(CliError, match="is not a time"):
            parse_time(bad, NOW, "--start")


def test_relative_times_are_not_taken_for_flags():
    assert relative_times(["simulate", "c.yaml", "--start", "-30m", "--end", "-5m", "-o", "json"]) == [
        "simulate", "c.yaml", "--start=-30m", "--end=-5m", "-o", "json"]
    assert relative_times(["--start", "-o"]) == ["--start", "-o"]


def canary(interval: str = "10s", metrics: list | None = None) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "podinfo", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": interval, "threshold": 2, "maxWeight": 20, "stepWeight": 10,
                              "metrics": metrics if metrics is not None else [
                                  {"name": "request-success-rate", "thresholdRange": {"min": 99}}]}}})


def test_the_window_is_cut_into_analysis_steps():
    step, times = window(canary(), NOW - timedelta(seconds=60), NOW)
    assert step == 10 and len(times) == 7 and times[0] == (NOW - timedelta(seconds=60)).timestamp()
    with pytest.raises(CliError, match="not after"):
        window(canary(), NOW, NOW)
    with pytest.raises(CliError, match="at most 1000"):
        window(canary("1s"), NOW - timedelta(hours=1), NOW)
    with pytest.raises(CliError, match="no metrics"):
        window(canary(metrics=[]), NOW - timedelta(minutes=1), NOW)


def test_the_scenario_takes_webhooks_from_the_file_and_metrics_from_prometheus():
    rec = Replay("http://p", NOW, NOW, 10.0, [1.0, 2.0], {"request-success-rate": [100.0, None]})
    assert scenario_of({"webhooks": {"approve": True}}, rec) == {
        "webhooks": {"approve": True}, "metrics": {"request-success-rate": [100.0, None]}}
    with pytest.raises(CliError, match="leave out metrics"):
        scenario_of({"metrics": {"request-success-rate": 1}}, rec)


class Prometheus:
    """Answers /api/v1/query_range: per query substring, a value per step (None: no sample)."""

    def __init__(self, series: dict[str, list[float | None]]):
        self.series, self.queries = series, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                outer.queries.append(q)
                start, end, step = float(q["start"]), float(q["end"]), float(q["step"])
                values = next((v for k, v in outer.series.items() if k in q["query"]), None)
                if callable(values):  # a value per sample time
                    n = int((float(q["end"]) - float(q["start"])) // float(q["step"])) + 1
                    values = [values(float(q["start"]) + i * float(q["step"])) for i in range(n)]
                if values is None:
                    body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
                    code = 400
                else:
                    n = int((end - start) // step) + 1
                    pairs = [[start + i * step, str(values[min(i, len(values) - 1)])] for i in range(n)
                             if values[min(i, len(values) - 1)] is not None]
                    body = {"status": "success", "data": {"resultType": "matrix",
                                                          "result": [{"metric": {}, "values": pairs}] if pairs else []}}
                    code = 200
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def prometheus():
    servers = []

    def start(series):
        servers.append(Prometheus(series))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def run(tmp_path, *args: str) -> tuple[int, str, str]:
    body = canary(metrics=[{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                           {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
                           {"name": "errors", "templateRef": {"name": "errors"}, "thresholdRange": {"max": 5}}])
    doc = body.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc.update(apiVersion="canary.dev/v1beta1", kind="Canary")
    template = {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "errors"},
                "spec": {"provider": {"type": "prometheus", "address": "http://elsewhere.invalid"},
                         "query": 'sum(rate(errors_total{ns="{{ namespace }}",app="{{ target }}"}[{{ interval }}]))'}}
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump_all([doc, template]))
    out, err = io.StringIO(), io.StringIO()
    ctx = Ctx(api_factory=lambda: None, out=out, err=err, clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    code = main(["simulate", str(path), *args], ctx)
    return code, out.getvalue(), err.getvalue()


def test_a_replayed_window_with_errors_fails(tmp_path, prometheus, capsys):
    prom = prometheus({"response_code!~": [100, 42, 40, 41, 40, 40, 100, 100], "histogram_quantile": [24.5],
                       "errors_total": [0, 0, 1]})
    code, out, err = run(tmp_path, "--from-prometheus", prom.url, "--start", "-70s", "--expect", "Failed",
                         "-o", "json")
    assert code == 0, out + err + capsys.readouterr().err
    data = json.loads(out)
    values = {m["name"]: m["values"] for m in data["replay"]["metrics"]}
    assert values["request-success-rate"] == [100, 42, 40, 41, 40, 40, 100, 100]
    assert values["request-duration"] == [24.5] * 8  # istio: milliseconds already (scale 1)
    queries = {m["name"]: m["query"] for m in data["replay"]["metrics"]}
    assert queries["errors"] == 'sum(rate(errors_total{ns="shop",app="podinfo"}[1m]))'
    assert data["replay"]["steps"] == 8 and data["replay"]["start"] == "2026-03-01T09:58:50Z"
    assert {q["step"] for q in prom.queries} == {"10"}  # one range query per metric, the analysis interval
    assert len(prom.queries) == 3
    failed = [c for line in data["timeline"] for c in line["checks"] if not c["ok"]]
    assert failed and failed[0]["name"] == "request-success-rate" and failed[0]["value"] == 42
    assert "the release was decided after 3 of the window's 8 analysis steps" in data["replay"]["warnings"][0]


def test_a_clean_window_succeeds_and_says_what_was_replayed(tmp_path, prometheus):
    prom = prometheus({"response_code!~": [100], "histogram_quantile": [24.5], "errors_total": [0]})
    code, out, err = run(tmp_path, "--from-prometheus", prom.url, "--start", "2026-03-01T09:59:50Z", "--end",
                         "2026-03-01T10:00:00Z", "--expect", "Succeeded")
    assert code == 0, out + err
    first, second = out.splitlines()[:2]
    assert first == f"replayed 2 analysis steps (every 10s) from 2026-03-01T09:59:50Z to 2026-03-01T10:00:00Z of {prom.url}"
    assert "OUTCOME Succeeded" in out and not second.startswith(("warning", "note"))  # the two steps it took
    code, out, err = run(tmp_path, "--from-prometheus", prom.url, "--start", "2026-03-01T09:59:55Z", "--end",
                         "2026-03-01T10:00:00Z", "--expect", "Succeeded")
    assert code == 0 and out.splitlines()[0].startswith("replayed 1 analysis step (every 10s)")
    assert "warning: the release ran 2 analyses, the window has 1: the last values were repeated" in out


def test_no_data_is_said_and_a_promql_error_is_one_line(tmp_path, prometheus):
    prom = prometheus({"response_code!~": [None], "histogram_quantile": [24.5], "errors_total": [0]})
    code, out, _ = run(tmp_path, "--from-prometheus", prom.url, "--start", "-1m", "--expect", "Failed")
    assert code == 0 and "warning: metric request-success-rate: no data in the window" in out
    prom = prometheus({"response_code!~": [100], "histogram_quantile": [24.5]})
    code, out, err = run(tmp_path, "--from-prometheus", prom.url, "--start", "-1m")
    assert code == 3 and err.startswith("error: metric errors: query 'sum(rate(errors_total") and "parse error" in err
    code, _, err = run(tmp_path, "--from-prometheus", "http://127.0.0.1:1", "--start", "-1m")
    assert code == 3 and "cannot reach" in err and len(err.strip().splitlines()) == 1


def compared_run(tmp_path, prometheus, canary_latency, *args: str) -> tuple[int, dict, Prometheus]:
    prom = prometheus({'app="podinfo"}': lambda t: canary_latency + int(t) % 7,
                       'app="podinfo-primary"}': lambda t: 100 + int(t) % 7})
    body = canary(metrics=[{"name": "latency", "templateRef": {"name": "latency"}, "interval": "30s",
                            "compare": {"tolerance": 10}}]).model_dump(by_alias=True, exclude_none=True, mode="json")
    body.update(apiVersion="canary.dev/v1beta1", kind="Canary")
    template = {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "latency"},
                "spec": {"provider": {"type": "prometheus"}, "query": 'avg(lat{app="{{ target }}"})'}}
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump_all([body, template]))
    out, err = io.StringIO(), io.StringIO()
    ctx = Ctx(api_factory=lambda: None, out=out, err=err, clock=lambda: NOW)  # type: ignore[arg-type,return-value]
    code = main(["simulate", str(path), "--from-prometheus", prom.url, "--start", "-60s", "-o", "json", *args], ctx)
    assert not err.getvalue() or code != 0, err.getvalue()
    return code, json.loads(out.getvalue()), prom


def test_a_compared_metric_is_judged_on_the_samples_the_operator_would_have_fetched(tmp_path, prometheus):
    code, data, prom = compared_run(tmp_path, prometheus, 160, "--expect", "Failed")
    assert code == 0 and data["outcome"] == "Failed"
    [metric] = data["replay"]["metrics"]
    # per step: the metric's interval (30s) ending at the step, one sample a second (30 / 60 -> 1s)
    assert metric["samples"] == {"canary": [30] * 7, "primary": [30] * 7}
    ranges = [q for q in prom.queries if q["step"] == "1"]
    assert {q["query"] for q in ranges} == {'avg(lat{app="podinfo"})', 'avg(lat{app="podinfo-primary"})'}
    assert float(ranges[0]["start"]) == (NOW - timedelta(seconds=90)).timestamp()
    assert "metric latency: Fail against the primary (canary 30, primary 30 samples)" in data["lastFailure"]
    code, data, _ = compared_run(tmp_path, prometheus, 100, "--expect", "Succeeded")
    assert code == 0 and data["outcome"] == "Succeeded", data["timeline"]


async def test_a_long_window_is_fetched_in_range_queries_of_at_most_a_thousand_samples():
    from canary.cli.replay import _series

    class Client:
        address = "fake"

        def __init__(self):
            self.calls: list[tuple[float, float]] = []

        async def query_range(self, q, start, end, step):
            self.calls.append((start, end))
            n = int(round((end - start) / step)) + 1
            return tuple((start + i * step, 1.0) for i in range(n))

    client = Client()
    got = await _series(client, "q", 0.0, 2500.0, 1.0)  # type: ignore[arg-type]
    assert client.calls == [(0.0, 999.0), (1000.0, 1999.0), (2000.0, 2500.0)]
    assert [t for t, _ in got] == [float(i) for i in range(2501)]
    with pytest.raises(CliError, match="at most 200"):
        await _series(client, "q", 0.0, 1e6, 1.0)  # type: ignore[arg-type]
