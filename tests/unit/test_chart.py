"""The Helm chart (charts/canary-operator), rendered offline by the Helm v4 engine
(`helm-python-sdk`, which embeds Helm's Go library: no helm binary, no cluster)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) is not installed")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "canary-operator"
RELEASE, NS = "canary-operator", "canary-system"


def render(values: dict | None = None, release: str = RELEASE, namespace: str = NS) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    objs = []
    for path, text in manifests.items():
        if path.endswith(".txt"):
            continue
        objs.extend(d for d in yaml.safe_load_all(text) if d)
    return objs


def only(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objs: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def container(objs: list[dict]) -> dict:
    (c,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def operator_parser():
    """The parser of `canary operator`, with the flags the chart passes."""
    from canary import cli

    return cli.build_parser()


def parse_args(objs: list[dict]):
    c = container(objs)
    return operator_parser().parse_args(c.get("command", [])[1:] + c["args"])


def app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


# ---- value sets ------------------------------------------------------------------------------


def test_defaults():
    objs = render()
    assert kinds(objs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"] \
        or kinds(objs) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "ServiceAccount"]
    dep = only(objs, "Deployment")
    assert dep["metadata"]["namespace"] == NS
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # never two operators acting at once
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "canary-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objs)
    assert c["image"] == f"ghcr.io/canary-dev/canary-operator:{app_version()}"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["terminationGracePeriodSeconds"] == 30  # shutdown timeout 20 + 10
    args = parse_args(objs)
    assert args.cmd == "operator"
    assert args.mesh_provider == "istio"
    assert args.metrics_server == "http://prometheus.istio-system:9090"
    assert args.namespace is None and args.label_selector is None
    assert args.leader_election is False
    assert args.log_format == "json" and args.log_level == "info"
    assert args.shutdown_timeout == 20
    # the probes point at ports the container declares
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http-metrics": args.metrics_port, "health": 8081}
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # the metrics Service selects the operator's pods on the metrics port
    svc = only(objs, "Service")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http-metrics"
    # the ServiceAccount is bound to the ClusterRole
    binding = only(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": only(objs, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "canary-operator", "namespace": NS}]
    # no leader election: no Lease rights, no PodDisruptionBudget, no ServiceMonitor
    assert not [o for o in objs if o["kind"] in ("Role", "PodDisruptionBudget", "ServiceMonitor")]


def test_namespace_scoped():
    objs = render({"namespace": "team-a", "labelSelector": "shard=a,tier=web"})
    assert "ClusterRole" not in kinds(objs) and "ClusterRoleBinding" not in kinds(objs)
    role = only(objs, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    binding = only(objs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "canary-operator", "namespace": NS}]
    # the same rights as the ClusterRole, only in one namespace
    assert role["rules"] == only(render(), "ClusterRole")["rules"]
    args = parse_args(objs)
    assert args.namespace == "team-a"
    assert args.label_selector == "shard=a,tier=web"


def test_high_availability():
    objs = render({"replicas": 2, "leaderElection": {"enabled": True}})
    dep = only(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = parse_args(objs)
    assert args.leader_election is True
    assert args.leader_election_namespace == NS
    assert args.leader_election_id == "canary-operator-leader"  # the operator's default Lease name
    # the Lease Role names exactly the Lease the operator uses, in the release namespace
    role = only(objs, "Role")
    assert role["metadata"]["namespace"] == NS
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [args.leader_election_id], "verbs": ["get", "update"]}]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]} in role["rules"]
    rb = only(objs, "RoleBinding")
    assert rb["roleRef"]["name"] == role["metadata"]["name"]
    assert rb["subjects"][0]["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]
    pdb = only(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_one_replica_with_leader_election_keeps_rolling_updates_and_no_pdb():
    objs = render({"leaderElection": {"enabled": True}})
    assert only(objs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]


def test_release_name_sets_the_lease_name():
    objs = render({"leaderElection": {"enabled": True}}, release="shard-a")
    args = parse_args(objs)
    assert args.leader_election_id == "shard-a-canary-operator-leader"
    assert only(objs, "Deployment")["metadata"]["name"] == "shard-a-canary-operator"


def test_service_monitor():
    objs = render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "30s", "labels": {"release": "kps"}}}})
    sm = only(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    svc = only(objs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["interval"] == "30s" and endpoint["path"] == "/metrics"


def test_rbac_and_service_account_can_be_left_out():
    objs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert kinds(objs) in (["Deployment", "Service"], ["ConfigMap", "Deployment", "Service"])
    assert only(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


def test_grafana_dashboard():
    dashboard = CHART / "files" / "dashboard.json"
    objs = render()
    maps = [o for o in objs if o["kind"] == "ConfigMap"]
    if not dashboard.exists():
        assert maps == []
        pytest.skip("files/dashboard.json not there yet")
    (cm,) = maps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["canary-operator.json"]) == json.loads(dashboard.read_text())
    assert [o for o in render({"grafanaDashboard": {"enabled": False}}) if o["kind"] == "ConfigMap"] == []


def test_prometheus_rules():
    rules = CHART / "files" / "prometheus-rules.yaml"
    assert not [o for o in render() if o["kind"] == "PrometheusRule"]  # off by default
    if not rules.exists():
        with pytest.raises(helm.HelmError, match="files/prometheus-rules.yaml"):
            render({"prometheusRule": {"enabled": True}})
        pytest.skip("files/prometheus-rules.yaml not there yet")
    pr = only(render({"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}), "PrometheusRule")
    assert pr["metadata"]["labels"]["release"] == "kps"
    assert pr["spec"]["groups"] and all(g.get("rules") for g in pr["spec"]["groups"])


def test_image_tag_and_pull_secrets():
    objs = render({"image": {"tag": "0.2.0-rc.1", "repository": "registry.example/canary"},
                   "imagePullSecrets": [{"name": "regcred"}]})
    assert container(objs)["image"] == "registry.example/canary:0.2.0-rc.1"
    assert only(objs, "Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_image_digest_and_numeric_tag():
    digest = "sha256:" + "ab" * 32
    assert container(render({"image": {"digest": digest, "tag": "ignored"}}))["image"] == \
        f"ghcr.io/canary-dev/canary-operator@{digest}"
    assert container(render({"image": {"tag": 2}}))["image"] == "ghcr.io/canary-dev/canary-operator:2"
    assert container(render({"image": {"tag": 1.5}}))["image"] == "ghcr.io/canary-dev/canary-operator:1.5"
    assert container(render({"image": {"tag": ""}}))["image"] == f"ghcr.io/canary-dev/canary-operator:{app_version()}"


def test_operator_flags_from_values():
    objs = render({"selectorLabels": "app.kubernetes.io/name,app", "clusterName": "prod-eu",
                   "alertWebhook": "https://alerts.example/hook", "eventWebhook": "https://events.example/hook",
                   "extraArgs": ["--shutdown-timeout=45"]})
    args = parse_args(objs)
    assert args.selector_labels == "app.kubernetes.io/name,app"
    assert args.cluster_name == "prod-eu"
    assert args.alert_webhook == "https://alerts.example/hook"
    assert args.event_webhook == "https://events.example/hook"
    assert args.shutdown_timeout == 45  # extraArgs come last, so they win
    defaults = parse_args(render())
    assert defaults.cluster_name == "" and defaults.alert_webhook is None and defaults.event_webhook is None
    assert defaults.selector_labels == operator_parser().parse_args(["operator"]).selector_labels


def test_tick_slots_default_to_the_operators_and_the_namespace_share_is_a_value():
    defaults, bare = parse_args(render()), operator_parser().parse_args(["operator"])
    assert defaults.max_concurrent == bare.max_concurrent  # the chart does not halve the operator's default
    assert defaults.max_per_namespace is None
    assert parse_args(render({"maxPerNamespace": 7})).max_per_namespace == 7


def test_kube_api_qps_and_burst():
    """The API client's client-side rate limit (Flagger's kubeconfigQPS / kubeconfigBurst)."""
    args = parse_args(render({"kubeApi": {"qps": 20, "burst": 40}}))
    assert (args.kube_api_qps, args.kube_api_burst) == (20.0, 40)
    assert parse_args(render({"kubeApi": {"qps": 2.5}})).kube_api_qps == 2.5
    default_args = container(render())["args"]
    # qps 0: no limit, the operator's default
    assert not any(a.startswith(("--kube-api-qps", "--kube-api-burst")) for a in default_args)
    defaults, bare = parse_args(render()), operator_parser().parse_args(["operator"])
    assert (defaults.kube_api_qps, defaults.kube_api_burst) == (bare.kube_api_qps, bare.kube_api_burst) == (0.0, 100)
    # the requests in flight: the chart's default is the operator's
    assert defaults.kube_api_connections == bare.kube_api_connections == 16
    assert parse_args(render({"kubeApi": {"connections": 4}})).kube_api_connections == 4


def test_extra_env_volumes_and_mounts():
    objs = render({"env": [{"name": "A", "value": "1"}], "extraEnv": [{"name": "B", "value": "2"}],
                   "volumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                   "volumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}]})
    c = container(objs)
    assert [e["name"] for e in c["env"]] == ["PYTHONUNBUFFERED", "A", "B"]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}]
    pod = only(objs, "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "ca"]
    assert pod["volumes"][1] == {"name": "ca", "configMap": {"name": "corp-ca"}}


def test_pod_annotations_and_scrape_annotations():
    meta = only(render({"podAnnotations": {"team": "platform"}}), "Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"team": "platform"}
    assert "annotations" not in only(render(), "Deployment")["spec"]["template"]["metadata"]
    meta = only(render({"metrics": {"scrapeAnnotations": True, "port": 9100}}), "Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                                   "prometheus.io/path": "/metrics"}


def test_service_monitor_namespace_relabelings_and_honor_labels():
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "python_gc_.*", "action": "drop"}]
    sm = only(render({"metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring", "honorLabels": True,
                                                     "relabelings": relabel, "metricRelabelings": drop}}}),
              "ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}  # the Service stays in the release namespace
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["relabelings"] == relabel and endpoint["metricRelabelings"] == drop
    (endpoint,) = only(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")["spec"]["endpoints"]
    assert "honorLabels" not in endpoint and "relabelings" not in endpoint


def test_dashboard_namespace_and_folder():
    cm = only(render({"grafanaDashboard": {"namespace": "grafana", "folder": "Delivery"}}), "ConfigMap")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Delivery"}
    cm = only(render({"grafanaDashboard": {"folder": "D", "folderAnnotation": "k8s-sidecar-target-directory",
                                           "annotations": {"x": "y"}}}), "ConfigMap")
    assert cm["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "D", "x": "y"}
    assert "annotations" not in only(render(), "ConfigMap")["metadata"]


def test_crds_can_be_templates_kept_on_uninstall():
    assert not [o for o in render() if o["kind"] == "CustomResourceDefinition"]  # default: Helm's crds/
    crds = {o["metadata"]["name"]: o for o in render({"crds": {"install": True}})
            if o["kind"] == "CustomResourceDefinition"}
    generated = {yaml.safe_load(f.read_text())["metadata"]["name"]: yaml.safe_load(f.read_text())
                 for f in (CHART / "crds").glob("*.yaml")}
    assert set(crds) == set(generated) == {"canaries.canary.dev", "metrictemplates.canary.dev",
                                           "alertproviders.canary.dev"}
    for name, crd in crds.items():
        assert crd["spec"] == generated[name]["spec"], name  # the generated CRDs, unchanged
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    unkept = [o for o in render({"crds": {"install": True, "keep": False}}) if o["kind"] == "CustomResourceDefinition"]
    assert unkept and all("helm.sh/resource-policy" not in (o["metadata"].get("annotations") or {}) for o in unkept)


def test_the_readme_upgrade_advice_keeps_new_defaults():
    """--reuse-values would keep the old release's values and drop every new value's default
    (a template reading it then fails or renders empty); --reset-then-reuse-values does not."""
    for doc in (REPO / "README.md", REPO / "docs" / "install.md"):
        upgrades = [line for line in doc.read_text().splitlines() if line.lstrip().startswith(("helm upgrade", "`helm upgrade"))]
        assert upgrades, doc
        for line in upgrades:
            assert "--reset-then-reuse-values" in line, (doc, line)
            assert " --reuse-values" not in line, (doc, line)


# ---- bad values are refused with the key named --------------------------------------------------


@pytest.mark.parametrize("values, where", [
    ({"replicaCount": 2}, "replicaCount"),  # a typo of `replicas`
    ({"replicas": 0}, "/replicas"),
    ({"replicas": "2"}, "/replicas"),
    ({"meshProvider": "linkerd"}, "/meshProvider"),
    ({"metricsServer": "prometheus:9090"}, "/metricsServer"),
    ({"namespace": "Team_A"}, "/namespace"),
    ({"labelSelector": "shard"}, "/labelSelector"),
    ({"log": {"level": "verbose"}}, "/log/level"),
    ({"log": {"format": "xml"}}, "/log/format"),
    ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
    ({"leaderElection": {"enable": True}}, "enable"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"enabled": True, "interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"tag": True}}, "/image/tag"),
    ({"clusterName": "prod eu"}, "/clusterName"),
    ({"alertWebhook": "hooks.example"}, "/alertWebhook"),
    ({"eventWebhook": "hooks.example"}, "/eventWebhook"),
    ({"extraArgs": ["shutdown"]}, "/extraArgs/0"),
    ({"selectorLabels": "app, name"}, "/selectorLabels"),
    ({"volumeMounts": [{"name": "x", "mountPath": "relative"}]}, "/volumeMounts/0/mountPath"),
    ({"crds": {"instal": True}}, "instal"),
    ({"metrics": {"serviceMonitor": {"namespace": "Mon"}}}, "/metrics/serviceMonitor/namespace"),
    ({"grafanaDashboard": {"namespace": "Graf ana"}}, "/grafanaDashboard/namespace"),
    ({"kubeApi": {"qps": -1}}, "/kubeApi/qps"),
    ({"kubeApi": {"burst": 0}}, "/kubeApi/burst"),
    ({"kubeApi": {"qpss": 5}}, "qpss"),
])
def test_bad_values_are_refused_by_the_schema(values, where):
    with pytest.raises(helm.HelmValuesError) as exc:
        render(values)
    message = str(exc.value)
    assert "schema" in message and where in message, message


def test_two_replicas_without_leader_election_are_refused():
    with pytest.raises(helm.HelmError, match="replicas: 2 needs leaderElection.enabled=true"):
        render({"replicas": 2})


def test_service_monitor_needs_the_service():
    with pytest.raises(helm.HelmError, match="needs metrics.service.enabled"):
        render({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_lint_is_clean():
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # no warnings or errors


# ---- one source of truth ---------------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds():
    """`make chart-crds` copies crds/ (generated from the models) into the chart."""
    ours = {f.name: f.read_bytes() for f in (REPO / "crds").glob("*.yaml")}
    chart = {f.name: f.read_bytes() for f in (CHART / "crds").glob("*.yaml")}
    assert set(chart) == set(ours), "run `make chart-crds`"
    for name in ours:
        assert chart[name] == ours[name], f"charts/canary-operator/crds/{name} is stale: run `make chart-crds`"
    with helm.Chart.load(CHART) as c:
        names = {yaml.safe_load(crd["data"])["metadata"]["name"] for crd in c.crds}
    assert names == {"canaries.canary.dev", "metrictemplates.canary.dev", "alertproviders.canary.dev"}


def test_versions_and_image_agree():
    """Chart appVersion = package version = the Dockerfile's version, and the chart's default
    image is the one the Dockerfile says it builds."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert app_version() == project["version"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(project['version'])}$", dockerfile, re.M)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"{values['image']['repository']}:<version>" in dockerfile
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)  # numeric: runAsNonRoot can check it
    assert values["podSecurityContext"]["runAsUser"] == 10001


def test_constraints_pin_every_runtime_dependency():
    from packaging.requirements import Requirement

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        req = Requirement(raw)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{name} is not pinned in constraints.txt: run scripts/constraints.py"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {req}"


def test_security_values_reach_the_operator():
    from canary import security

    default = security.from_args(parse_args(render()))
    assert not default.no_cross_namespace_refs and not default.egress.allowlist
    objs = render({"noCrossNamespaceRefs": True,
                   "egress": {"denyCIDRs": ["10.96.0.0/12"], "allowHosts": [".svc.cluster.local"]}})
    policy = security.from_args(parse_args(objs))
    assert policy.no_cross_namespace_refs
    assert policy.egress.allow_hosts == (".svc.cluster.local",)
    assert any(str(n) == "10.96.0.0/12" for n in policy.egress.deny_cidrs)
    assert any(str(n) == "169.254.0.0/16" for n in policy.egress.deny_cidrs)  # the defaults stay
