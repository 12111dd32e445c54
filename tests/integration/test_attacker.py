"""A tenant plays the attacker against the operator, on the RBAC-enforcing testbed (issue 10).

The operator runs as the chart's ServiceAccount (its real token), with --no-cross-namespace-refs.
The tenant owns one namespace; a victim namespace holds a Secret, a Service, an HPA, a
Deployment and a MetricTemplate. Every test asserts from outside:

* the API server's audit log shows no request of the operator's identity for an object of the
  victim namespace (cluster-wide list/watch of the caches aside, which name no object), and
  the victim's objects are unchanged (same resourceVersion);
* the tenant got a clear answer: the API server refused the object at admission, or the Canary
  has Valid=False with a Warning event (one, not one per tick).

Walking names are refused by the CRDs; to test the operator itself, the same specs are also
applied with the CRDs loosened to "any spec" (as after `helm upgrade`, which never updates
the CRDs of crds/): the operator must refuse them on its own.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes
import pytest

from testbed import ops
from tests.e2e.conftest import canary, deployment
from tests.integration.test_rbac import (  # noqa: F401  (fixtures)
    RELEASE_NS,
    SA_USER,
    Audit,
    admin,
    free_port,
    rbac_testbed,
    release,
    sa_kubeconfig,
)

pytestmark = pytest.mark.testbed

SECRET_VALUE = "victim-token-value-1234"
REDIRECT_TARGET_BODY = "BODY-OF-THE-REDIRECT-TARGET"


@pytest.fixture(scope="module")
def operator(rbac_testbed, sa_kubeconfig):
    op = ops.OperatorProcess(
        name=f"attacker-operator-{free_port()}", metrics_port=free_port(),
        kubeconfig=sa_kubeconfig, metrics_server=rbac_testbed["prometheus"], log_dir=Path(rbac_testbed["logs"]),
        scrape=False, extra=["--no-cross-namespace-refs"],
    ).start()
    ops.wait_until(lambda: "canary-operator started" in op.log_tail(200) or not op.alive(), 30,
                   "the operator to start")
    time.sleep(1)
    assert op.alive(), op.log_tail(60)
    yield op
    op.stop()
    print(op.log_tail(80))


def _ns(admin, base: str) -> str:
    name = f"{base}-{free_port() % 100000}"
    ops.ensure_namespace(admin, name)
    return name


@pytest.fixture(scope="module")
def victim(admin):
    ns = _ns(admin, "victim")
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespaced_secret(ns, {"metadata": {"name": "token"},
                                       "data": {"token": base64.b64encode(SECRET_VALUE.encode()).decode(),
                                                "address": base64.b64encode(b"http://127.0.0.1:1/").decode()}})
    ops.apply(admin, deployment("app"), ns)
    ops.apply(admin, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
                      "spec": {"selector": {"app": "app"}, "ports": [{"port": 80, "targetPort": 9898}]}}, ns)
    ops.apply(admin, {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
                      "metadata": {"name": "app"},
                      "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                               "minReplicas": 1, "maxReplicas": 2}}, ns)
    ops.apply(admin, {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "tpl"},
                      "spec": {"provider": {"type": "prometheus", "address": "http://127.0.0.1:1"},
                               "query": "vector(1)"}}, ns)
    yield ns
    core.delete_namespace(ns)


@pytest.fixture
def tenant(admin, request):
    ns = _ns(admin, "tenant")
    yield ns
    kubernetes.client.CoreV1Api(admin).delete_namespace(ns)


def _versions(admin, ns: str) -> dict[str, str]:
    """What the victim's objects are (spec, data, owners, labels, annotations), and which exist.

    Not resourceVersions: controllers write status (the HPA controller every few seconds)."""
    core, apps = kubernetes.client.CoreV1Api(admin), kubernetes.client.AppsV1Api(admin)
    hpa = kubernetes.client.AutoscalingV1Api(admin)

    def shape(obj, annotations: bool = True) -> str:
        d = admin.sanitize_for_serialization(obj)
        meta = d.get("metadata") or {}
        return json.dumps([d.get("spec"), d.get("data"), meta.get("ownerReferences"), meta.get("labels"),
                           meta.get("annotations") if annotations else None], sort_keys=True)

    out = {"secret": shape(core.read_namespaced_secret("token", ns)),
           "service": shape(core.read_namespaced_service("app", ns)),
           "deployment": shape(apps.read_namespaced_deployment("app", ns)),
           # the HPA controller writes its conditions into annotations (autoscaling/v1)
           "hpa": shape(hpa.read_namespaced_horizontal_pod_autoscaler("app", ns), annotations=False)}
    names = {s.metadata.name for s in core.list_namespaced_service(ns).items}
    names |= {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
    out["names"] = ",".join(sorted(names))
    return out


def _reached(audit: Audit, victim: str) -> list[tuple]:
    """Requests of the operator's identity that named an object outside the tenant's namespace."""
    out = []
    for e in audit.entries(SA_USER):
        ref = e.get("objectRef") or {}
        if ref.get("namespace") == victim or "/" in (ref.get("name") or "") or ".." in (ref.get("name") or ""):
            out.append((e["verb"], ref.get("resource"), ref.get("namespace"), ref.get("name")))
    return out


def _valid_false(admin, ns: str, name: str, timeout: float = 30) -> dict:
    def cond():
        for c in ops.canary_status(admin, ns, name).get("conditions") or []:
            if c["type"] == "Valid" and c["status"] == "False":
                return c
        return None
    return ops.wait_until(cond, timeout, f"Valid=False on {ns}/{name}")


def _warnings(admin, ns: str, name: str) -> list:
    events = kubernetes.client.CoreV1Api(admin).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items
    return [e for e in events if e.type == "Warning"]


def _everything_shown(admin, ns: str, name: str) -> str:
    obj = kubernetes.client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "canary.dev", "v1beta1", ns, "canaries", name)
    events = kubernetes.client.CoreV1Api(admin).list_namespaced_event(ns).items
    return json.dumps(obj.get("status") or {}) + " ".join(e.message or "" for e in events)


class _LooseCrds:
    """The canary.dev CRDs with "any spec" schemas (old CRDs left by a helm upgrade); restored after.

    Both changes are server-side applies as the chart's installer makes them (field manager
    "python", helm-python's), so that a later `helm install` of changed CRDs meets no conflict."""

    MANAGER = "python"

    def __init__(self, admin, cleanup: str):
        self.admin = admin
        self.cleanup = cleanup  # the namespace whose Canaries go before the strict schema is back
        self.ext = kubernetes.client.ApiextensionsV1Api(admin)
        self.saved: dict[str, dict] = {}

    def _apply(self, name: str, crd: dict) -> None:
        body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name, **{k: v for k, v in (crd.get("metadata") or {}).items()
                                              if k in ("labels", "annotations")}},
                "spec": crd["spec"]}
        self.ext.patch_custom_resource_definition(name, body, field_manager=self.MANAGER, force=True,
                                                  _content_type="application/apply-patch+yaml")

    def __enter__(self):
        for name in ("canaries.canary.dev", "alertproviders.canary.dev"):
            crd = self.ext.api_client.sanitize_for_serialization(self.ext.read_custom_resource_definition(name))
            self.saved[name] = copy.deepcopy(crd)
            for v in crd["spec"]["versions"]:
                props = v["schema"]["openAPIV3Schema"]["properties"]
                for key in ("spec", "status"):
                    if key in props:
                        props[key] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                props["metadata"] = {"type": "object"}
            self._apply(name, crd)
        time.sleep(2)  # the API server picks up the new schema
        return self

    def __exit__(self, *exc):
        _delete_canaries(self.admin, self.cleanup)  # the loose schema still lets their finalizers go
        for name, crd in self.saved.items():
            self._apply(name, crd)
        time.sleep(1)


def _delete_canaries(admin, ns: str) -> None:
    """Delete every Canary of `ns`; finalizers a failing delete handler left are removed (an invalid
    Canary cannot be updated once the strict schema is back)."""
    co = kubernetes.client.CustomObjectsApi(admin)
    for obj in co.list_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries")["items"]:
        co.delete_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries", obj["metadata"]["name"])
    time.sleep(3)
    for obj in co.list_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries")["items"]:
        print("left by the delete handler:", obj["metadata"]["name"], obj["metadata"].get("finalizers"))
        co.patch_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries", obj["metadata"]["name"],
                                          {"metadata": {"finalizers": None}})
    ops.wait_until(lambda: not co.list_namespaced_custom_object("canary.dev", "v1beta1", ns, "canaries")["items"],
                   30, f"the Canaries of {ns} to go")


def _walking_canaries(victim: str) -> dict[str, dict]:
    up = f"../../{victim}"
    base = canary("walker", metrics=[])
    out = {}
    c = copy.deepcopy(base)
    c["spec"]["service"]["name"] = f"{up}/services/app"
    out["service"] = c
    c = copy.deepcopy(base)
    c["spec"]["autoscalerRef"] = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
                                  "name": f"{up}/horizontalpodautoscalers/app"}
    out["autoscalerRef"] = c
    c = copy.deepcopy(base)
    c["spec"]["targetRef"]["name"] = f"{up}/deployments/app"
    c["spec"]["revertOnDeletion"] = True
    out["targetRef"] = c
    return out


# ---- the tests ---------------------------------------------------------------------------------------


def test_walking_names_are_refused_at_admission(admin, release, tenant, victim):
    co = kubernetes.client.CustomObjectsApi(admin)
    for field, body in _walking_canaries(victim).items():
        with pytest.raises(kubernetes.client.ApiException) as err:
            co.create_namespaced_custom_object("canary.dev", "v1beta1", tenant, "canaries", body)
        assert err.value.status == 422 and "should match" in err.value.body, (field, err.value.body)
    provider = {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "evil"},
                "spec": {"type": "generic", "secretRef": {"name": f"../../{victim}/secrets/token"}}}
    with pytest.raises(kubernetes.client.ApiException) as err:
        co.create_namespaced_custom_object("canary.dev", "v1beta1", tenant, "alertproviders", provider)
    assert err.value.status == 422
    long = canary("t" * 250, metrics=[])
    with pytest.raises(kubernetes.client.ApiException) as err:
        co.create_namespaced_custom_object("canary.dev", "v1beta1", tenant, "canaries", long)
    assert "236" in err.value.body
    long = canary("app", metrics=[])
    long["spec"]["service"]["name"] = "s" * 56
    with pytest.raises(kubernetes.client.ApiException) as err:
        co.create_namespaced_custom_object("canary.dev", "v1beta1", tenant, "canaries", long)
    assert "55" in err.value.body


def test_walking_names_reach_nothing_even_without_the_crd_schema(rbac_testbed, admin, release, operator, tenant,
                                                                   victim):
    audit = Audit(rbac_testbed["audit_log"])
    before = _versions(admin, victim)
    ops.apply(admin, deployment("walker"), tenant)
    with _LooseCrds(admin, cleanup=tenant):
        provider = {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "evil"},
                    "spec": {"type": "generic", "secretRef": {"name": f"../../{victim}/secrets/token"}}}
        ops.apply(admin, provider, tenant)
        for field, body in _walking_canaries(victim).items():
            body["metadata"]["name"] = f"walker-{field.lower()}"
            body["spec"]["analysis"]["alerts"] = [{"name": "a", "providerRef": {"name": "evil"}, "severity": "info"}]
            ops.apply(admin, body, tenant)
        # a valid Canary whose alerts go to the walking provider: the init alert must not read the Secret
        ops.apply(admin, deployment("alerted"), tenant)
        alerted = canary("alerted", metrics=[])
        alerted["spec"]["analysis"]["alerts"] = [{"name": "a", "providerRef": {"name": "evil"}, "severity": "info"}]
        ops.apply(admin, alerted, tenant)
        for field in _walking_canaries(victim):
            cond = _valid_false(admin, tenant, f"walker-{field.lower()}")
            assert "should match pattern" in cond["message"], cond
        ops.wait_until(lambda: ops.canary_status(admin, tenant, "alerted").get("phase") == "Initialized", 60,
                       "the alerted Canary to initialize (and send its alert)")
        first = {f: len(_warnings(admin, tenant, f"walker-{f.lower()}")) for f in _walking_canaries(victim)}
        time.sleep(6)  # a few ticks (interval 2s): the report is not repeated
        for field in _walking_canaries(victim):
            # (a second report can race the first: a tick that started before the first status write)
            assert 1 <= len(_warnings(admin, tenant, f"walker-{field.lower()}")) == first[field] <= 2
    assert _reached(audit, victim) == []
    assert _versions(admin, victim) == before
    assert SECRET_VALUE not in operator.log_tail(2000)
    assert operator.alive()


def test_over_long_names_and_the_1000h_webhook_are_invalid_specs(rbac_testbed, admin, release, operator, tenant):
    audit = Audit(rbac_testbed["audit_log"])
    hits: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ops.apply(admin, deployment("slow"), tenant)
        body = canary("slow", metrics=[], webhooks=[{"name": "forever", "type": "pre-rollout", "timeout": "1000h",
                                                     "url": f"http://127.0.0.1:{server.server_port}/hook"}])
        ops.apply(admin, body, tenant)  # 1000h matches the duration pattern: the models refuse it
        cond = _valid_false(admin, tenant, "slow")
        assert "longer than the maximum of 10m" in cond["message"]
        ops.apply(admin, deployment("t" * 60), tenant)
        ops.apply(admin, canary("longtarget", metrics=[], targetRef={"apiVersion": "apps/v1", "kind": "Deployment",
                                                                   "name": "t" * 60}), tenant)
        cond = _valid_false(admin, tenant, "longtarget")
        assert "set service.name" in cond["message"]
        time.sleep(4)
        assert hits == []
        assert len(_warnings(admin, tenant, "longtarget")) == 1
        apps = kubernetes.client.AppsV1Api(admin)
        assert {d.metadata.name for d in apps.list_namespaced_deployment(tenant).items} == {"slow", "t" * 60}
    finally:
        server.shutdown()
    writes = [e for e in audit.entries(SA_USER) if e["verb"] in ("create", "update", "patch", "delete")
              and (e.get("objectRef") or {}).get("resource") not in ("events", "canaries", "leases")]
    assert writes == []  # nothing but the status and the Warning events


def test_a_redirecting_webhook_is_not_followed(rbac_testbed, admin, release, operator, tenant):
    second_hits: list[str] = []

    class Second(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            second_hits.append("GET " + self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(REDIRECT_TARGET_BODY.encode())

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    second = ThreadingHTTPServer(("127.0.0.1", 0), Second)

    class First(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{second.server_port}/latest/meta-data/")
            self.end_headers()
            self.wfile.write(b"see other")

        def log_message(self, *args):
            pass

    first = ThreadingHTTPServer(("127.0.0.1", 0), First)
    for s in (first, second):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        ops.apply(admin, deployment("hooked"), tenant)
        ops.apply(admin, canary("hooked", metrics=[], webhooks=[
            {"name": "gate", "type": "confirm-rollout", "url": f"http://127.0.0.1:{first.server_port}/gate"}]),
            tenant)
        ops.wait_until(lambda: ops.canary_status(admin, tenant, "hooked").get("phase") == "Initialized", 60,
                       "Initialized")
        ops.patch_deployment(admin, tenant, "hooked", image="ghcr.io/stefanprodan/podinfo:6.0.1")

        def refused():
            shown = _everything_shown(admin, tenant, "hooked")
            return "redirects are not followed" in shown and shown

        shown = ops.wait_until(refused, 60, "the gate's 302 in the status")
        assert second_hits == []
        assert REDIRECT_TARGET_BODY not in shown
        assert ops.canary_status(admin, tenant, "hooked").get("canaryWeight", 0) == 0
    finally:
        first.shutdown()
        second.shutdown()


def test_cross_namespace_refs_are_refused_with_the_flag(rbac_testbed, admin, release, operator, tenant, victim):
    audit = Audit(rbac_testbed["audit_log"])
    ops.apply(admin, deployment("borrower"), tenant)
    ops.apply(admin, canary("borrower", metrics=[
        {"name": "borrowed", "templateRef": {"name": "tpl", "namespace": victim}, "thresholdRange": {"max": 1}}]),
        tenant)
    cond = _valid_false(admin, tenant, "borrower")
    assert "--no-cross-namespace-refs" in cond["message"] and f"{victim}/tpl" in cond["message"]
    assert len(_warnings(admin, tenant, "borrower")) == 1
    apps = kubernetes.client.AppsV1Api(admin)
    assert "borrower-primary" not in {d.metadata.name for d in apps.list_namespaced_deployment(tenant).items}
    assert _reached(audit, victim) == []
