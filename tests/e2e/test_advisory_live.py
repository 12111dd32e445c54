"""An advisory Canary end to end (operator process, real Prometheus, traffic simulator): the
canary is analysed on traffic that reaches it directly (a second VirtualService on the canary's
Service, as a smoke-test client would), the Canary's VirtualService is sampled throughout and
never routes or mirrors anything to the canary, the bad canary gets a "would roll back" verdict,
and a person's promote then promotes it for real."""

from __future__ import annotations

import threading
import time
import urllib.request

import kubernetes
import pytest

from canary import commands
from testbed import ops
from tests.e2e.conftest import canary, deployment
from tests.e2e.test_judge_live import IMAGE2, compared, latency_template, wait_for_primary_latency, wait_phase

pytestmark = pytest.mark.testbed


class RouteSampler:
    """Reads the Canary's VirtualService every `period` seconds in a thread; keeps every
    (primary, canary, mirrored) seen."""

    def __init__(self, api_client, ns: str, period: float = 0.3):
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.ns, self.period = ns, period
        self.seen: list[tuple[int, int, bool]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        vs = self.custom.get_namespaced_custom_object("networking.istio.io", "v1beta1", self.ns, "virtualservices",
                                                      "podinfo")
        weights = {"primary": 0, "canary": 0}
        mirrored = False
        for rule in vs["spec"].get("http") or []:
            mirrored = mirrored or bool(rule.get("mirror"))
            for dest in rule.get("route") or []:
                host = dest["destination"]["host"]
                side = "canary" if host.startswith("podinfo-canary") else "primary"
                weights[side] = max(weights[side], dest.get("weight", 100))
        self.seen.append((weights["primary"], weights["canary"], mirrored))

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample()
            except kubernetes.client.ApiException:
                pass
            self.stop.wait(self.period)

    def __enter__(self) -> "RouteSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def direct_traffic(api_client, ns: str, rps: str) -> None:
    """A client that calls the canary's Service directly (not through the Canary's routes)."""
    ops.apply(api_client, {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "podinfo-direct", "annotations": {"sim.canary.dev/rps": rps}},
        "spec": {"hosts": ["podinfo-canary"], "http": [{"route": [{"destination": {"host": "podinfo-canary"}}]}]},
    }, ns)


def advisory_status(api_client, ns: str) -> dict:
    return ops.canary_status(api_client, ns, "podinfo").get("advisory") or {}


def test_an_advisory_canary_never_shifts_traffic_would_roll_back_and_a_person_promotes(
        api_client, namespace, operator):
    latency_template(api_client, namespace)
    ops.apply(api_client, deployment("podinfo", annotations={"sim.canary.dev/latency-ms": "100"}), namespace)
    spec = canary("podinfo", metrics=[compared()], threshold=1, step_weight=20, max_weight=60,
                  progressDeadlineSeconds=120)
    spec["spec"]["analysis"]["advisory"] = True
    ops.apply(api_client, spec, namespace)
    wait_phase(api_client, namespace, {"Initialized"}, 60, operator)
    wait_for_primary_latency(namespace)
    direct_traffic(api_client, namespace, "40")
    started = time.monotonic()
    with RouteSampler(api_client, namespace) as routes:
        ops.patch_deployment(api_client, namespace, "podinfo", image=IMAGE2,
                             annotations={"sim.canary.dev/latency-ms": "130"})
        try:
            ops.wait_until(lambda: advisory_status(api_client, namespace).get("verdict"), 90, "an advisory verdict")
        except TimeoutError:
            print(operator.log_tail(80))
            raise
        st = ops.canary_status(api_client, namespace, "podinfo")
        assert st["advisory"]["verdict"] == "Rollback", st["advisory"]
        assert st["phase"] == "WaitingPromotion" and st["canaryWeight"] == 0
        advise = [e for e in st["ledger"] if e.get("kind") == "advise"]
        assert len(advise) == 1 and advise[0]["advisoryWeight"] > 0, advise
        judged = [c for c in advise[0]["checks"] if c["name"] == "latency-mean"][0]
        assert judged["verdict"] == "Fail" and judged["pValue"] < 0.05 and judged["canarySamples"] >= 8, judged
        conditions = {c["type"]: c for c in st["conditions"]}
        assert conditions["Advisory"]["reason"] == "WouldRollBack"
        # it waits for a person: nothing is promoted or rolled back meanwhile
        time.sleep(6)
        st = ops.canary_status(api_client, namespace, "podinfo")
        assert st["phase"] == "WaitingPromotion"
        apps = kubernetes.client.AppsV1Api(api_client)
        assert apps.read_namespaced_deployment("podinfo-primary", namespace).spec.template.spec.containers[0].image \
            != IMAGE2
        kubernetes.client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "canary.dev", "v1beta1", namespace, "canaries", "podinfo",
            {"metadata": {"annotations": {commands.annotation("promote"):
                                          commands.encode("alice", reason="the latency is expected")}}})
        wait_phase(api_client, namespace, {"Succeeded", "Failed"}, 60, operator)
        time.sleep(1)
    st = ops.canary_status(api_client, namespace, "podinfo")
    assert st["phase"] == "Succeeded", st.get("lastFailure")
    primary = apps.read_namespaced_deployment("podinfo-primary", namespace)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    tally = {t["check"]: t for t in st["advisory"]["tallies"]}["(advisory)"]
    assert (tally["agreed"], tally["disagreed"]) == (0, 1) and "promoted by alice" in tally["last"], tally
    # the operator's own metrics count the disagreement
    body = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    series = (f'canary_advisory_disagreements_total{{check="(advisory)",name="podinfo",'
              f'namespace="{namespace}"}} 1.0')
    assert series in body, [line for line in body.splitlines() if "advisory" in line]
    core = kubernetes.client.CoreV1Api(api_client)
    ops.wait_until(lambda: any(e.reason == "AdvisoryVerdict" for e in core.list_namespaced_event(namespace).items),
                   15, "the AdvisoryVerdict Event")
    # the Canary's routes, sampled every 0.3 s over the whole run: all traffic on the primary
    assert len(routes.seen) > 20 and set(routes.seen) == {(100, 0, False)}, sorted(set(routes.seen))
    print(f"advisory e2e: {len(routes.seen)} route samples over {time.monotonic() - started:.0f}s")
