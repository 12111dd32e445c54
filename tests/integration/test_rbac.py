"""The chart's RBAC on a real API server with RBAC on: a second, isolated testbed
(~/.cache/canary-operator/testbed-rbac, ports +100), the chart installed by the Helm v4 engine,
and the operator running as the chart's ServiceAccount (its real token).

* whole releases (a promotion and a rollback) need no right the chart lacks (no 403 at all in
  the audit log for that identity);
* with one right taken away the operator says so clearly (log line and Warning event naming
  the forbidden request), keeps running, keeps serving the other Canaries, and recovers by
  itself once the right is back.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest
import yaml

from testbed import ops
from tests.e2e.conftest import canary, deployment

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) is not installed")

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "canary-operator"
CACHE = Path(os.environ.get("CANARY_CACHE", Path.home() / ".cache" / "canary-operator"))
# CANARY_RBAC_TESTBED_DIR / CANARY_RBAC_TESTBED_PORT_OFFSET: another place for it (parallel runs)
RBAC_ENV = {"CANARY_TESTBED_DIR": os.environ.get("CANARY_RBAC_TESTBED_DIR", str(CACHE / "testbed-rbac")),
            "CANARY_TESTBED_PORT_OFFSET": os.environ.get("CANARY_RBAC_TESTBED_PORT_OFFSET", "100")}
RELEASE, RELEASE_NS = "canary-operator", "canary-system"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:canary-operator"
IMAGE2 = "ghcr.io/stefanprodan/podinfo:6.0.1"


def _testbed(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # the testbed's ports are module constants: another testbed needs another process
    return subprocess.run([sys.executable, "-m", "testbed", *args], cwd=REPO, env={**os.environ, **RBAC_ENV},
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rbac_testbed():
    status = _testbed("status")
    was_running = status.returncode == 0
    if was_running and json.loads(status.stdout).get("mode") != "rbac":
        _testbed("down")  # ours, but started without RBAC: restart it with
        was_running = False
    up = _testbed("up", "--rbac")
    if up.returncode != 0:
        pytest.fail(f"the RBAC testbed could not start:\n{up.stderr[-3000:]}")
    info = json.loads(up.stdout)
    assert info["mode"] == "rbac"
    try:
        yield info
    finally:
        if not was_running and not os.environ.get("CANARY_TESTBED_KEEP"):
            down = _testbed("down")
            assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def admin(rbac_testbed):
    client = kubernetes.config.new_client_from_config(config_file=rbac_testbed["kubeconfig"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def release(rbac_testbed, admin):
    """The chart, installed (or upgraded) by the Helm v4 engine, as an administrator would."""
    values = {"leaderElection": {"enabled": True}, "metricsServer": rbac_testbed["prometheus"]}
    with helm.Config(kubeconfig_path=rbac_testbed["kubeconfig"], namespace=RELEASE_NS) as cfg:
        try:
            cfg.status(RELEASE)
            rel = cfg.upgrade(CHART, RELEASE, values, namespace=RELEASE_NS, timeout=120)
        except helm.HelmNotFoundError:
            rel = cfg.install(CHART, RELEASE, values, namespace=RELEASE_NS, create_namespace=True, timeout=120)
        yield rel
        cfg.uninstall(RELEASE)


def sa_kubeconfig_for(admin, api_server: str, sa_name: str, path: Path) -> Path:
    """A kubeconfig with the token the token controller made for a ServiceAccount."""
    core = kubernetes.client.CoreV1Api(admin)

    def token():
        sa = core.read_namespaced_service_account(sa_name, RELEASE_NS)
        for ref in sa.secrets or []:
            secret = core.read_namespaced_secret(ref.name, RELEASE_NS)
            if secret.data and secret.data.get("token"):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    tok = ops.wait_until(token, 30, f"the token of ServiceAccount {sa_name}")
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "rbac", "cluster": {"server": api_server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "sa", "user": {"token": tok}}],
        "contexts": [{"name": "sa", "context": {"cluster": "rbac", "user": "sa"}}],
    }))
    return path


@pytest.fixture(scope="module")
def sa_kubeconfig(rbac_testbed, admin, release, tmp_path_factory) -> Path:
    return sa_kubeconfig_for(admin, rbac_testbed["api_server"], "canary-operator",
                             tmp_path_factory.mktemp("sa") / "canary-operator.kubeconfig")


@pytest.fixture(scope="module")
def operator(rbac_testbed, sa_kubeconfig):
    op = ops.OperatorProcess(
        name=f"rbac-operator-{free_port()}", metrics_port=free_port(),
        kubeconfig=sa_kubeconfig, metrics_server=rbac_testbed["prometheus"], log_dir=Path(rbac_testbed["logs"]),
        scrape=False,
        extra=["--leader-election", "--leader-election-namespace", RELEASE_NS,
               "--leader-election-id", "canary-operator-leader"],
    ).start()
    ops.wait_until(lambda: "became the leader" in op.log_tail(200) or not op.alive(), 30, "leadership")
    assert op.alive(), op.log_tail(60)
    yield op
    op.stop()
    print(op.log_tail(60))


@pytest.fixture
def ns(admin, request):
    name = request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + str(os.getpid() % 10000)
    ops.ensure_namespace(admin, name)
    yield name
    kubernetes.client.CoreV1Api(admin).delete_namespace(name)


class Audit:
    """The RBAC testbed's audit log from now on."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def entries(self, user: str) -> list[dict]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if (e.get("user") or {}).get("username") == user:
                out.append(e)
        return out


def rbac_denied(entry: dict) -> bool:
    """Refused by the authorizer (a 403 from admission, e.g. writing into a namespace that is
    being deleted, is not an RBAC matter)."""
    return (entry.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"


def phase(admin, ns, name):
    return ops.canary_status(admin, ns, name).get("phase")


def wait_phase(admin, ns, name, want, timeout, op):
    try:
        ops.wait_until(lambda: phase(admin, ns, name) in want, timeout, f"{ns}/{name} in {want}")
    except TimeoutError:
        print(op.log_tail(80))
        raise
    return phase(admin, ns, name)


def istio_release(admin, ns, op, name="podinfo", **kw) -> None:
    ops.apply(admin, deployment(name), ns)
    ops.apply(admin, canary(name, max_weight=30, step_weight=10, **kw), ns)
    wait_phase(admin, ns, name, {"Initialized"}, 60, op)


def vs_weights(admin, ns, name) -> tuple[int, int]:
    vs = kubernetes.client.CustomObjectsApi(admin).get_namespaced_custom_object(
        "networking.istio.io", "v1beta1", ns, "virtualservices", name)
    w = {r["destination"]["host"]: r.get("weight", 0) for r in vs["spec"]["http"][-1]["route"]}
    return w.get(f"{name}-primary", 0), w.get(f"{name}-canary", 0)


# ---- tests ------------------------------------------------------------------------------------


def test_the_chart_is_installed_by_helm(admin, release):
    assert release["name"] == RELEASE
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    role = rbac.read_cluster_role(RELEASE)
    with helm.Chart.load(CHART) as chart:
        rendered = [d for path, text in chart.render({"leaderElection": {"enabled": True}}, name=RELEASE,
                                                      namespace=RELEASE_NS).items()
                    if path.endswith("rbac.yaml") for d in yaml.safe_load_all(text) if d]
    want = next(d for d in rendered if d["kind"] == "ClusterRole")["rules"]
    got = admin.sanitize_for_serialization(role)["rules"]
    assert [{k: v for k, v in r.items() if k != "resourceNames"} for r in got] == want
    assert rbac.read_namespaced_role(f"{RELEASE}-leader-election", RELEASE_NS).rules[1].resource_names == \
        ["canary-operator-leader"]
    # the CRDs came from the chart's crds/ directory
    ext = kubernetes.client.ApiextensionsV1Api(admin)
    names = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert {"canaries.canary.dev", "metrictemplates.canary.dev", "alertproviders.canary.dev"} <= names


def test_a_namespace_scoped_release_needs_no_cluster_wide_right(rbac_testbed, admin, release, ns, tmp_path):
    """`namespace: <ns>`: a Role in that namespace (and the Lease Role), no ClusterRole at all.
    (Runs before the cluster-wide operator of the next tests is started: it would act here too.)"""
    audit = Audit(rbac_testbed["audit_log"])
    values = {"namespace": ns, "leaderElection": {"enabled": True}, "metricsServer": rbac_testbed["prometheus"]}
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    with helm.Config(kubeconfig_path=rbac_testbed["kubeconfig"], namespace=RELEASE_NS) as cfg:
        cfg.install(CHART, "shard", values, namespace=RELEASE_NS, timeout=120)
        op = None
        try:
            assert "shard-canary-operator" not in {r.metadata.name for r in rbac.list_cluster_role().items}
            assert rbac.read_namespaced_role("shard-canary-operator", ns).rules
            kubeconfig = sa_kubeconfig_for(admin, rbac_testbed["api_server"], "shard-canary-operator",
                                           tmp_path / "shard.kubeconfig")
            op = ops.OperatorProcess(
                name=f"rbac-shard-{free_port()}", metrics_port=free_port(),
                kubeconfig=kubeconfig, metrics_server=rbac_testbed["prometheus"],
                log_dir=Path(rbac_testbed["logs"]), scrape=False,
                extra=["--namespace", ns, "--leader-election", "--leader-election-namespace", RELEASE_NS,
                       "--leader-election-id", "shard-canary-operator-leader"],
            ).start()
            istio_release(admin, ns, op)
            ops.patch_deployment(admin, ns, "podinfo", image=IMAGE2)
            assert wait_phase(admin, ns, "podinfo", {"Succeeded", "Failed"}, 120, op) == "Succeeded"
            user = f"system:serviceaccount:{RELEASE_NS}:shard-canary-operator"
            entries = audit.entries(user)
            assert entries
            denied = [(e["verb"], e.get("objectRef")) for e in entries if rbac_denied(e)]
            assert denied == []
            assert not [e for e in entries if not (e.get("objectRef") or {}).get("namespace")
                        and e.get("objectRef")]  # no request for a cluster-scoped resource
            assert op.alive()
        finally:
            if op is not None:
                op.stop()
            cfg.uninstall("shard")


def test_releases_need_no_right_the_chart_lacks(rbac_testbed, admin, operator, ns):
    audit = Audit(rbac_testbed["audit_log"])
    istio_release(admin, ns, operator)
    # a good release is promoted
    ops.patch_deployment(admin, ns, "podinfo", image=IMAGE2)
    assert wait_phase(admin, ns, "podinfo", {"Succeeded", "Failed"}, 120, operator) == "Succeeded"
    primary = kubernetes.client.AppsV1Api(admin).read_namespaced_deployment("podinfo-primary", ns)
    assert primary.spec.template.spec.containers[0].image == IMAGE2
    # a bad one is rolled back
    ops.patch_deployment(admin, ns, "podinfo", image="ghcr.io/stefanprodan/podinfo:6.0.2",
                         annotations={"sim.canary.dev/error-rate": "0.5"})
    ops.wait_until(lambda: phase(admin, ns, "podinfo") == "Progressing", 30, "the bad release to start")
    assert wait_phase(admin, ns, "podinfo", {"Succeeded", "Failed"}, 120, operator) == "Failed"
    assert vs_weights(admin, ns, "podinfo") == (100, 0)
    # the operator's identity was never refused anything
    entries = audit.entries(SA_USER)
    assert len(entries) > 20  # it did act as that identity
    denied = [(e["verb"], e.get("objectRef"), e["responseStatus"]) for e in entries if rbac_denied(e)]
    assert denied == []
    assert not re.search(r'is forbidden: User ".*" cannot', operator.log_tail(400))  # RBAC's wording
    # and it held the Lease the chart's Role names
    lease = kubernetes.client.CoordinationV1Api(admin).read_namespaced_lease("canary-operator-leader", RELEASE_NS)
    assert lease.spec.holder_identity and lease.spec.holder_identity.endswith(f"_{operator.proc.pid}")


def _set_virtualservice_update(admin, allowed: bool) -> None:
    """Give or take `update` on virtualservices in the chart's ClusterRole."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
    role = admin.sanitize_for_serialization(rbac.read_cluster_role(RELEASE))
    rules = []
    for rule in role["rules"]:
        if "virtualservices" in rule.get("resources", []):
            others = [r for r in rule["resources"] if r != "virtualservices"]
            if others:
                rules.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if allowed or v != "update"]
            if allowed and "update" not in verbs:
                verbs.append("update")
            rules.append({**rule, "resources": ["virtualservices"], "verbs": verbs})
        else:
            rules.append(rule)
    role["rules"] = rules
    rbac.replace_cluster_role(RELEASE, role)


def test_a_missing_right_is_reported_and_the_rest_keeps_working(rbac_testbed, admin, operator, ns):
    pid = operator.proc.pid
    core = kubernetes.client.CoreV1Api(admin)
    # A: Istio; B: Gateway API (needs no VirtualService)
    istio_release(admin, ns, operator, name="alpha")
    ops.apply(admin, {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gateway"},
                      "spec": {"gatewayClassName": "testbed",
                               "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
                                              "allowedRoutes": {"namespaces": {"from": "All"}}}]}}, ns)
    ops.apply(admin, deployment("beta"), ns)
    beta = canary("beta", max_weight=30, step_weight=10, metrics=[])
    beta["spec"]["provider"] = "gatewayapi:v1"
    beta["spec"]["service"]["gatewayRefs"] = [{"name": "gateway", "namespace": ns}]
    ops.apply(admin, beta, ns)
    wait_phase(admin, ns, "beta", {"Initialized"}, 60, operator)

    _set_virtualservice_update(admin, allowed=False)
    try:
        time.sleep(2)  # the authorizer's cache
        ops.patch_deployment(admin, ns, "alpha", image=IMAGE2)
        ops.patch_deployment(admin, ns, "beta", image=IMAGE2)

        def warned():
            events = core.list_namespaced_event(ns, field_selector="involvedObject.name=alpha").items
            return [e for e in events if e.type == "Warning" and "forbidden" in (e.message or "").lower()]

        events = ops.wait_until(warned, 60, "a Warning event about the forbidden request")
        assert "virtualservices" in events[0].message and "update" in events[0].message, events[0].message
        log = operator.log_tail(400)
        assert any("forbidden" in line.lower() and "virtualservices" in line and "alpha" in line
                   for line in log.splitlines()), log
        # B is released while A cannot move its traffic
        assert wait_phase(admin, ns, "beta", {"Succeeded", "Failed"}, 120, operator) == "Succeeded"
        assert vs_weights(admin, ns, "alpha") == (100, 0)
        assert ops.canary_status(admin, ns, "alpha").get("canaryWeight", 0) == 0
        assert operator.alive() and operator.proc.pid == pid  # no crash, no restart
    finally:
        _set_virtualservice_update(admin, allowed=True)
    # the right is back: A goes on by itself
    assert wait_phase(admin, ns, "alpha", {"Succeeded", "Failed"}, 120, operator) == "Succeeded"
    assert operator.alive() and operator.proc.pid == pid
