"""The testbed's traffic simulator at 1,000 routes (issue 12): a Service's endpoints come from a
label index (no scan of the namespace per route), and a batch's cost is bounded per route, not
per request, with exact request counts."""

from __future__ import annotations

import time

from testbed import routing
from testbed.trafficsim import SAMPLES, Metrics, Store, TrafficSim
from tests.unit.test_routing import NS, _by, _route, dep, svc, vs_weights


def fleet(n: int) -> tuple[list[dict], list[dict]]:
    objs, routes = [], []
    for i in range(n):
        for suffix in ("-primary", "-canary"):
            objs += [svc(f"app{i}{suffix}"), dep(f"app{i}{suffix}")]
        spec = vs_weights(75, 25)
        for r in spec["http"]:
            for d in r["route"]:
                d["destination"]["host"] = d["destination"]["host"].replace("podinfo", f"app{i}")
        routes.append(_route("VirtualService", f"app{i}", spec))
    return objs, routes


def test_endpoints_come_from_the_label_index() -> None:
    objs, _ = fleet(3)
    w = routing.World.from_objects([o for o in objs if "selector" in o["spec"]],
                                   [o for o in objs if "template" in o["spec"]])
    eps = w.endpoints(routing.ServiceRef(NS, "app1-canary"))
    assert [(wl.name, share) for wl, share in eps] == [("app1-canary", 1.0)]
    assert w.endpoints(routing.ServiceRef(NS, "nothing")) == []


def test_a_thousand_routes_resolve_and_send_quickly_with_exact_counts() -> None:
    objs, routes = fleet(1000)
    store = Store()
    store.replacer("services")([o for o in objs if "selector" in o["spec"]])
    store.replacer("deployments")([o for o in objs if "template" in o["spec"]])
    store.replacer("virtualservices")(routes)
    metrics = Metrics()
    sim = TrafficSim(store, metrics, rps=400.0)
    t = time.process_time()
    sim.tick(1.0)
    took = time.process_time() - t
    assert len(sim.routes) == 1000
    by = _by(metrics)
    assert sum(by.values()) == 400 * 1000  # every request counted
    assert by[("app7-primary", "200")] == 300 and by[("app7-canary", "200")] == 100
    d = next(v for k, v in metrics.durations.items() if k[0] == "destination" and k[3] == "app7-primary")
    assert d[2] == 300 and sum(d[0]) == 300  # histogram count exact, though at most SAMPLES drawn
    assert SAMPLES < 300
    assert took < 5.0  # (was a scan of 2,000 Deployments per Service, and 400,000 draws)
