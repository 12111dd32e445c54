"""The traffic simulator's /metrics is written directly (it is scraped every second): it must say
exactly what prometheus_client's writer says for the same series."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from testbed.trafficsim import REQUEST_LABELS, Metrics


def _samples(text: str) -> set[tuple]:
    return {(s.name, tuple(sorted(s.labels.items())), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _filled() -> Metrics:
    m = Metrics()
    now = time.monotonic()
    for i in range(5):
        for wl, code in (("podinfo-primary", "200"), ("podinfo", "500"), ("unknown", "503")):
            for rep in ("source", "destination"):
                values = {"reporter": rep, "destination_workload": wl, "response_code": code,
                          "destination_workload_namespace": f'ns-{i}"\\odd\nname'}
                m.observe(tuple(values.get(n, "x") for n in REQUEST_LABELS), [0.3, 10.0, 120.0, 7e6], now, weight=i + 1)
        m.count_route((f"ns-{i}", "podinfo", "VirtualService", "podinfo"), 10 * i + 1, now)
        m.count_route((f"ns-{i}", "podinfo", "VirtualService", "podinfo"), 3, now, mirrored=True)
    return m


def test_render_says_what_the_generic_writer_says():
    m = _filled()
    registry = CollectorRegistry()

    class Collector:
        def collect(self):
            return m.collect()

    registry.register(Collector())
    generic = generate_latest(registry).decode()
    direct = m.render().decode()
    assert _samples(direct) == _samples(generic)
    assert len(_samples(direct)) > 300
    families = {f.name: f.type for f in text_string_to_metric_families(direct)}
    assert families == {"istio_requests": "counter", "istio_request_duration_milliseconds": "histogram",
                        "http_request_duration_seconds": "histogram", "sim_route_requests": "counter",
                        "sim_route_mirrored_requests": "counter"}
