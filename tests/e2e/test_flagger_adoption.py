"""Adoption without a blip: the state a Flagger installation leaves behind, handed over to us.

On the testbed: Flagger's CRD (flagger.app, the same schema as ours under Flagger's group), a
Succeeded flagger.app Canary, and what Flagger generated for it, owned by that Canary: the
promoted `podinfo-primary`, the target scaled to zero, the apex/primary/canary Services,
DestinationRules and the VirtualService at 100/0 with Flagger's annotations. "Flagger" is
stopped by deleting its Canary with propagationPolicy Orphan (docs/migrating-from-flagger.md),
then the Canary rewritten by `canary migrate` is applied. Throughout, the routes are sampled
(always 100/0), the traffic simulator's counters show no 503, and the primary is not rolled
again; the next release is analysed and promoted as usual.
"""

from __future__ import annotations

import copy
import threading
import time

import kubernetes
import pytest
import yaml

from canary import migrate
from testbed import ops
from tests.e2e.conftest import deployment
from tests.e2e.test_operator import vs_weights, wait_phase

pytestmark = pytest.mark.testbed

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
FLAGGER_GROUP = "flagger.app"
FLUX = {"kustomize.toolkit.fluxcd.io/reconcile": "disabled", "helm.toolkit.fluxcd.io/driftDetection": "disabled"}
IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"

FLAGGER_CANARY = """\
# podinfo, as the team ran it under Flagger
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 9898
    targetPort: 9898
  analysis:
    interval: 2s      # short for the test
    threshold: 2
    maxWeight: 30
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
        interval: 10s
"""


def _crd_api(api_client):
    return kubernetes.client.ApiextensionsV1Api(api_client)


@pytest.fixture(scope="module")
def flagger_crd(testbed, api_client):
    """Flagger's Canary CRD: our generated schema under flagger.app (the API is field-compatible).

    It is left installed: deleting and re-creating a CRD makes the controller-manager's garbage
    collector rebuild its monitors, and an orphaning delete then waits for that."""
    ours = yaml.safe_load((REPO / "crds" / "canary.dev_canaries.yaml").read_text())
    crd = copy.deepcopy(ours)
    crd["metadata"] = {"name": f"canaries.{FLAGGER_GROUP}"}
    crd["spec"]["group"] = FLAGGER_GROUP
    crd["spec"]["names"].pop("shortNames", None)
    api = _crd_api(api_client)
    try:
        api.create_custom_resource_definition(crd)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    ops.wait_until(lambda: any(c.type == "Established" and c.status == "True" for c in
                               (api.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or [])),
                   30, "flagger.app CRD established")
    yield


def _owner(canary: dict) -> list[dict]:
    return [{"apiVersion": f"{FLAGGER_GROUP}/v1beta1", "kind": "Canary", "name": canary["metadata"]["name"],
             "uid": canary["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def _flagger_leftovers(api_client, ns: str) -> dict:
    """Create the Flagger Canary (Succeeded) and everything Flagger generated for it."""
    custom = kubernetes.client.CustomObjectsApi(api_client)
    body = yaml.safe_load(FLAGGER_CANARY)
    fc = custom.create_namespaced_custom_object(FLAGGER_GROUP, "v1beta1", ns, "canaries", body)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    custom.patch_namespaced_custom_object_status(FLAGGER_GROUP, "v1beta1", ns, "canaries", "podinfo", {"status": {
        "phase": "Succeeded", "canaryWeight": 0, "failedChecks": 0, "iterations": 0,
        "lastAppliedSpec": "5d8c9f7b6", "lastPromotedSpec": "5d8c9f7b6", "lastTransitionTime": now,
        "conditions": [{"type": "Promoted", "status": "True", "reason": "Succeeded", "lastUpdateTime": now,
                        "lastTransitionTime": now,
                        "message": "Canary analysis completed successfully, promotion finished."}]}})
    owners = _owner(fc)
    target = deployment("podinfo", replicas=0)  # Flagger scales the target to zero after a promotion
    ops.apply(api_client, target, ns)
    primary = deployment("podinfo-primary", replicas=1)
    primary["metadata"]["ownerReferences"] = owners
    primary["metadata"]["annotations"] = dict(FLUX)
    primary["spec"]["template"]["metadata"]["annotations"]["flagger-id"] = "1b7e6f0c-3d5a-4bfa-9e1d-2f6c0a9b8d7e"
    ops.apply(api_client, primary, ns)
    for name, selector in (("podinfo", "podinfo-primary"), ("podinfo-primary", "podinfo-primary"),
                           ("podinfo-canary", "podinfo")):
        ops.apply(api_client, {"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": name, "labels": {"app": name}, "annotations": dict(FLUX),
                                            "ownerReferences": owners},
                               "spec": {"selector": {"app": selector}, "type": "ClusterIP",
                                        "ports": [{"name": "http", "port": 9898, "targetPort": 9898,
                                                   "protocol": "TCP"}]}}, ns)
    for name in ("podinfo-primary", "podinfo-canary"):
        ops.apply(api_client, {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                               "metadata": {"name": name, "annotations": dict(FLUX), "ownerReferences": owners},
                               "spec": {"host": name}}, ns)
    ops.apply(api_client, {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                           "metadata": {"name": "podinfo", "annotations": dict(FLUX), "ownerReferences": owners},
                           "spec": {"hosts": ["podinfo"], "http": [{"route": [
                               {"destination": {"host": "podinfo-primary"}, "weight": 100},
                               {"destination": {"host": "podinfo-canary"}, "weight": 0}]}]}}, ns)
    return fc


class Sampler(threading.Thread):
    """VirtualService weights every 0.25 s while the handover runs."""

    def __init__(self, api_client, ns: str):
        super().__init__(daemon=True)
        self.api_client, self.ns = api_client, ns
        self.seen: list[tuple[int, int] | None] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.append(vs_weights(self.api_client, self.ns, "podinfo"))
            time.sleep(0.25)


def _503s(ns: str, seconds: int) -> float:
    return ops.prom_value(
        f'sum(increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",'
        f'response_code="503"}}[{seconds}s]))') or 0.0


def test_adoption_without_a_blip(api_client, namespace, operator, flagger_crd):
    ns = namespace
    apps = kubernetes.client.AppsV1Api(api_client)
    _flagger_leftovers(api_client, ns)
    ops.wait_until(lambda: (apps.read_namespaced_deployment("podinfo-primary", ns).status.available_replicas or 0) >= 1,
                   30, "Flagger's primary available")
    ops.wait_until(lambda: (ops.request_rate(ns, "podinfo-primary") or 0) > 0, 45, "live traffic on podinfo-primary")
    started = time.monotonic()
    primary_before = apps.read_namespaced_deployment("podinfo-primary", ns)

    sampler = Sampler(api_client, ns)
    sampler.start()
    try:
        # "Flagger" goes: its Canary is deleted, its children orphaned (they must survive)
        kubernetes.client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            FLAGGER_GROUP, "v1beta1", ns, "canaries", "podinfo", body={"propagationPolicy": "Orphan"})
        ops.wait_until(lambda: not apps.read_namespaced_deployment("podinfo-primary", ns).metadata.owner_references,
                       90, "the garbage collector orphaned the primary")

        migrated = migrate.migrate_text(FLAGGER_CANARY, "podinfo.yaml")
        assert migrated.changed and not [f for f in migrated.findings if f.severity == "error"]
        ops.apply(api_client, yaml.safe_load(migrated.text), ns)
        wait_phase(api_client, ns, "podinfo", {"Initialized"}, 60, operator)
        time.sleep(5)  # a few more samples and a scrape after the takeover
    finally:
        sampler.stop.set()
        sampler.join(5)

    assert len(sampler.seen) >= 20, len(sampler.seen)  # the handover was watched, not skipped
    assert all(w == (100, 0) for w in sampler.seen), sorted(set(map(str, sampler.seen)))
    print(f"handover: {len(sampler.seen)} route samples, all 100/0")
    primary_after = apps.read_namespaced_deployment("podinfo-primary", ns)
    # no new primary rollout: the same generation and the same pod template
    assert primary_after.metadata.generation == primary_before.metadata.generation
    assert primary_after.spec.template.metadata.annotations == primary_before.spec.template.metadata.annotations
    window = int(time.monotonic() - started) + 10
    assert _503s(ns, window) == 0, f"503s during the handover ({window}s)"
    assert (ops.request_rate(ns, "podinfo-primary") or 0) > 0

    # the next release is analysed as usual, then promoted
    ops.patch_deployment(api_client, ns, "podinfo", image=IMAGE2)
    weights = set()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        st = ops.canary_status(api_client, ns, "podinfo")
        weights.add(st.get("canaryWeight", 0))
        if st.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.3)
    st = ops.canary_status(api_client, ns, "podinfo")
    assert st.get("phase") == "Succeeded", (st.get("phase"), operator.log_tail(40))
    assert {10, 20, 30} <= weights, sorted(weights)
    checks = [c for e in st.get("ledger", []) for c in e.get("checks", []) if c.get("name") == "request-success-rate"]
    # analysed: the success rate was measured and passed (the first step may find no data yet, as the
    # canary's pods only just started taking traffic: a failed check below the threshold)
    assert any(c.get("ok") and c.get("value") is not None for c in checks), checks
    image = apps.read_namespaced_deployment("podinfo-primary", ns).spec.template.spec.containers[0].image
    assert image == IMAGE2
