"""Least privilege: the chart grants exactly the (apiGroup, resource, verb) rights the code uses.

How the used set is derived from the code, three ways that check each other:

1. Static: every call `<...>kube.get|list|create|replace|patch|delete(api_version, plural, ...)`
   in canary/ (AST). Where the API version and the plural are string literals, or module
   constants, the right is read off directly (`replace` is the verb `update`; `subresource=`
   names e.g. `canaries/status`).
2. Dynamic: the operator's own tick (`Operator._tick`, wired by its real startup handler) runs
   whole releases (initialise, promote, roll back) for every traffic provider, plus leader
   election and the revert-on-deletion helpers, against an in-memory API server that records
   each request together with the line in canary/ that sent it.
3. Every call site whose resource the static pass cannot resolve (the routers pass the plural
   and the discovered version in variables) must have been reached by the dynamic run, so a
   new code path cannot add a right unnoticed: the test then asks for a flow that covers it.

kopf's watches add list and watch on each watched resource (from the operator's registry).
The union is compared with the rules the chart renders, both ways: a right the code uses but
the chart lacks fails (the operator would get 403), and so does a right the chart grants that
no code uses.
"""

from __future__ import annotations

import ast
import asyncio
import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kopf
import pytest
import yaml

from canary.adapters.kube import Kube
from canary.leader import LeaderElector
from canary.operator import Operator, Options
from tests.unit.fakeapi import FakeApiServer

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) is not installed")

REPO = Path(__file__).resolve().parents[2]
CANARY = REPO / "canary"
CHART = REPO / "charts" / "canary-operator"
KUBE_VERBS = {"get": "get", "list": "list", "create": "create", "replace": "update", "patch": "patch",
              "delete": "delete"}
LEASES = ("coordination.k8s.io", "leases")

Right = tuple[str, str, str]  # (apiGroup, resource, verb)


# ---- 1. static ---------------------------------------------------------------------------------


class CallSite:
    def __init__(self, file: str, start: int, end: int, verb: str, group: str | None, resource: str | None):
        self.file, self.start, self.end = file, start, end
        self.verb, self.group, self.resource = verb, group, resource

    @property
    def resolved(self) -> bool:
        return self.group is not None and self.resource is not None

    def __repr__(self) -> str:
        return f"{self.file}:{self.start} {self.verb} {self.group}/{self.resource}"


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _string(node: ast.AST | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _group(api_version: str | None) -> str | None:
    if api_version is None:
        return None
    return api_version.split("/")[0] if "/" in api_version else ""


def static_call_sites() -> list[CallSite]:
    sites = []
    for path in sorted(CANARY.rglob("*.py")):
        if path == CANARY / "adapters" / "kube.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        constants = _module_constants(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in KUBE_VERBS or not ast.unparse(node.func.value).endswith("kube"):
                continue
            args = list(node.args) + [None, None]
            group = _group(_string(args[0], constants))
            resource = _string(args[1], constants)
            sub = next((k.value for k in node.keywords if k.arg == "subresource"), None)
            if sub is not None and resource is not None:
                sub_name = _string(sub, constants)
                resource = f"{resource}/{sub_name}" if sub_name else None
            sites.append(CallSite(str(path.relative_to(REPO)), node.lineno, node.end_lineno,
                                  KUBE_VERBS[node.func.attr], group, resource))
    return sites


# ---- 2. dynamic ----------------------------------------------------------------------------------


def deployment(name: str, image: str = "podinfo:6.0.0") -> dict:
    pod = {
        "containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 9898}],
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{name}-env", "key": "token"}}}]}],
        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test", "labels": {"app": name}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod}},
    }


def workload_objects(name: str, provider: str, own_route: bool) -> list[dict]:
    """What a team has before its Canary: the Deployment, its config, its HPA, and a route of
    its own that the Canary takes over (and gives back on deletion)."""
    objs = [
        deployment(name),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config", "namespace": "test"},
         "data": {"app.yaml": "level: info"}, "immutable": True},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-env", "namespace": "test"},
         "type": "Opaque", "data": {"token": "czNjcjN0"}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": name, "namespace": "test"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                  "minReplicas": 2, "maxReplicas": 4,
                  "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                                "target": {"type": "Utilization", "averageUtilization": 80}}}]}},
    ]
    if not own_route:
        pass  # the Canary creates the route
    elif provider == "istio":
        objs.append({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                     "metadata": {"name": name, "namespace": "test"},
                     "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}]}]}})
    else:
        objs.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                     "metadata": {"name": name, "namespace": "test"},
                     "spec": {"parentRefs": [{"name": "gateway", "namespace": "istio-system"}],
                              "rules": [{"backendRefs": [{"name": name, "port": 9898}]}]}})
    return objs


def canary(name: str, provider: str) -> dict:
    service: dict = {"port": 9898}
    if provider.startswith("gatewayapi"):
        service["gatewayRefs"] = [{"name": "gateway", "namespace": "istio-system"}]
    return {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": name},
            "progressDeadlineSeconds": 60,
            "service": service,
            "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 20, "stepWeight": 10, "metrics": []},
        },
    }


class Flow:
    """The operator's tick on an in-memory cluster, with a virtual clock."""

    def __init__(self, api: FakeApiServer, op: Operator):
        self.api, self.op = api, op
        self.now = datetime(2024, 1, 1, tzinfo=timezone.utc)
        self.pending: list = []
        op.deps.clock = lambda: self.now

    def sync_caches(self) -> None:
        """Deliver every stored object to the operator's own watch handlers (except the Canaries':
        this flow ticks them itself)."""
        import asyncio

        loop = asyncio.get_event_loop()
        for handler in self.op.registry._watching.get_all_handlers():
            sel = handler.selector
            plural = sel.any_name or sel.plural
            if plural == "canaries":
                continue
            for (group, ns, p, name), obj in list(self.api.objects.items()):
                if p == plural and group == (sel.group or ""):
                    event = {"type": "MODIFIED", "object": copy.deepcopy(obj)}
                    self.pending.append(loop.create_task(handler.fn(event=event, body=event["object"],
                                                                    type="MODIFIED", logger=None)))

    async def until(self, name: str, phases: set[str], max_ticks: int = 60, must: bool = True) -> str | None:
        for _ in range(max_ticks):
            self.sync_caches()
            await asyncio.gather(*self.pending)
            self.pending.clear()
            obj = self.api.get("canary.dev", "test", "canaries", name)
            phase = (obj.get("status") or {}).get("phase")
            if phase in phases:
                return phase
            result = await self.op._tick(obj)
            self.now += timedelta(seconds=max(1.0, min(result.wake_after, 10.0)))
        if not must:
            return None
        raise AssertionError(f"{name} never reached {phases}; status {obj.get('status')}")

    def edit(self, group: str, plural: str, name: str, fn) -> None:
        old = self.api.objects[(group, "test", plural, name)]
        new = copy.deepcopy(old)
        fn(new)
        self.api._store(group, "test", plural, old, new)


async def start_operator(api: FakeApiServer, monkeypatch, **options) -> Operator:
    """An Operator whose real startup handler ran, with its client on the in-memory server."""
    monkeypatch.setattr(Kube, "from_config", classmethod(lambda cls, kubeconfig=None, **kw: api.kube(**kw)))
    op = Operator(Options(**options))
    (startup,) = [h for h in op.registry._activities.get_all_handlers() if str(h.activity.value) == "startup"]
    await startup.fn(settings=kopf.OperatorSettings())
    return op


async def release_flows(api: FakeApiServer, monkeypatch) -> None:
    op = await start_operator(api, monkeypatch)
    flow = Flow(api, op)
    cases = [("istio", True), ("istio", False), ("gatewayapi:v1", True), ("gatewayapi:v1beta1", False)]
    for i, (provider, own_route) in enumerate(cases):
        name = f"app{i}"
        for obj in workload_objects(name, provider, own_route):
            api.put(obj)
        api.put(canary(name, provider))
        assert await flow.until(name, {"Initialized"}) == "Initialized"
        # a good release is promoted
        flow.edit("", "configmaps", f"{name}-config", lambda c: c["data"].update({"app.yaml": "level: debug"}))
        flow.edit("", "secrets", f"{name}-env", lambda c: c["data"].update({"token": "bmV3"}))
        flow.edit("autoscaling", "horizontalpodautoscalers", name, lambda h: h["spec"].update(maxReplicas=5))
        flow.edit("apps", "deployments", name,
                  lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="podinfo:6.0.1"))
        assert await flow.until(name, {"Progressing"}) == "Progressing"
        assert await flow.until(name, {"Succeeded", "Failed"}) == "Succeeded"
        primary = api.get("apps", "test", "deployments", f"{name}-primary")
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:6.0.1"
        # a changed spec is applied to the routing objects
        flow.edit("canary.dev", "canaries", name, lambda c: c["spec"]["service"].update(
            trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}}, timeout="30s"))
        await flow.until(name, {"never"}, max_ticks=3, must=False)
        # a release that never becomes ready is rolled back at the progress deadline
        flow.edit("apps", "deployments", name, lambda d: d["spec"]["template"].update(
            metadata={"labels": {"app": name}, "annotations": {"sim.canary.dev/ready": "false"}}))
        assert await flow.until(name, {"Progressing"}) == "Progressing"
        assert await flow.until(name, {"Succeeded", "Failed"}, max_ticks=120) == "Failed"
        # revertOnDeletion: give taken-over routes back and the target its traffic
        from canary.models import Canary

        model = Canary.from_obj(api.get("canary.dev", "test", "canaries", name))
        await op.router_for(model).finalize(model)
        await op.deps.workloads.revert(model, api.get("apps", "test", "deployments", name))
    # an AlertProvider whose webhook address is in a Secret
    api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "slack", "namespace": "test"},
             "data": {"address": "aHR0cDovL2xvY2FsaG9zdDox"}})
    op.caches.alert_providers.objects[("test", "slack")] = {
        "apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "slack", "namespace": "test"},
        "spec": {"type": "slack", "secretRef": {"name": "slack"}}}
    assert (await op.notifier.resolve("test", "slack")).address == "http://localhost:1"


async def leader_flow(api: FakeApiServer) -> None:
    elector = LeaderElector(api.kube(), "canary-system", "canary-operator-leader", "me")
    assert await elector.try_acquire_or_renew()  # create
    assert await elector.try_acquire_or_renew()  # get + update
    elector._leading = True
    assert await elector.release()


@pytest.fixture(scope="module")
def dynamic() -> FakeApiServer:
    import asyncio

    api = FakeApiServer()
    mp = pytest.MonkeyPatch()
    try:
        asyncio.run(release_flows(api, mp))
        asyncio.run(leader_flow(api))
    finally:
        mp.undo()
    return api


def watched() -> set[Right]:
    op = Operator(Options())
    out = set()
    for handler in op.registry._watching.get_all_handlers():
        sel = handler.selector
        for verb in ("list", "watch"):
            out.add((sel.group or "", sel.any_name or sel.plural, verb))
    return out


# ---- 3. the chart -------------------------------------------------------------------------------


def chart_rules(values: dict) -> tuple[list[dict], list[dict]]:
    """(main rules, leader-election rules) as rendered."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="canary-operator", namespace="canary-system", is_install=True)
    objs = [d for path, text in manifests.items() if not path.endswith(".txt")
            for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    main = [o for o in objs if o.get("kind") in ("ClusterRole", "Role") and not o["metadata"]["name"].endswith("-leader-election")]
    leader = [o for o in objs if o.get("kind") == "Role" and o["metadata"]["name"].endswith("-leader-election")]
    assert len(main) == 1
    return main[0]["rules"], (leader[0]["rules"] if leader else [])


def expand(rules: list[dict]) -> set[Right]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def used_rights(dynamic: FakeApiServer) -> set[Right]:
    static = {(s.group, s.resource, s.verb) for s in static_call_sites() if s.resolved}
    return static | dynamic.used() | watched()


# ---- the tests -------------------------------------------------------------------------------------


def test_the_static_scan_finds_the_known_call_sites():
    sites = static_call_sites()
    resolved = {(s.group, s.resource, s.verb) for s in sites if s.resolved}
    # a few that must be there, whatever else changes
    assert ("canary.dev", "canaries/status", "patch") in resolved
    assert ("apps", "deployments", "create") in resolved
    assert ("", "events", "create") in resolved
    assert ("coordination.k8s.io", "leases", "update") in resolved
    assert any(not s.resolved for s in sites)  # the routers' variable plurals


def test_every_unresolved_call_site_was_reached_by_the_flows(dynamic):
    reached = {(r.site[0], r.site[1]) for r in dynamic.requests if r.site}
    missing = [s for s in static_call_sites() if not s.resolved
               and not any(f == s.file and s.start <= line <= s.end for f, line in reached)]
    assert not missing, ("these Kubernetes calls name their resource in variables and no flow in "
                         f"test_rbac_rules.py reached them; extend release_flows(): {missing}")


def test_the_flows_used_only_what_the_static_scan_allows(dynamic):
    # and every request of the flows came from a call site the static scan knows
    sites = static_call_sites()
    for r in dynamic.requests:
        if r.verb == "discovery" or r.site is None:
            continue
        assert any(s.file == r.site[0] and s.start <= r.site[1] <= s.end for s in sites), r


def test_the_chart_grants_exactly_what_the_code_uses(dynamic):
    used = used_rights(dynamic)
    main_rules, leader_rules = chart_rules({"leaderElection": {"enabled": True}})
    granted = expand(main_rules)
    used_main = {u for u in used if u[:2] != LEASES}
    missing = sorted(used_main - granted)
    unused = sorted(granted - used_main)
    assert not missing, f"the code uses rights the chart's ClusterRole lacks (403 at run time): {missing}"
    assert not unused, f"the chart's ClusterRole grants rights no code uses: {unused}"
    # the Lease: create anywhere in the release namespace, get/update only on our own Lease
    used_leases = {u for u in used if u[:2] == LEASES}
    assert expand(leader_rules) == used_leases == {LEASES + ("get",), LEASES + ("create",), LEASES + ("update",)}
    for rule in leader_rules:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["canary-operator-leader"]


def test_namespace_scoped_rules_are_the_same(dynamic):
    cluster, _ = chart_rules({})
    namespaced, leader = chart_rules({"namespace": "team-a"})
    assert expand(namespaced) == expand(cluster)
    assert leader == []  # leader election off: no Lease rights


def test_secrets_are_touched_only_for_config_copies_and_alert_providers():
    """Rights on Secrets are the most sensitive ones the chart grants: list who uses them."""
    users = {(s.file, s.verb) for s in static_call_sites() if s.resource == "secrets"}
    notifier = "canary/adapters/notifiers/notifier.py"
    assert {f for f, _ in users} <= {"canary/adapters/configs.py", notifier, "canary/cluster.py"}, users
    assert {v for f, v in users if f == notifier} == {"get"}  # read only
    # the reconciler reads a MetricTemplate's provider.secretRef when the check runs
    assert {v for f, v in users if f == "canary/cluster.py"} <= {"get"}
    # a watch on Secrets would cache every Secret of the cluster in the operator: if that is ever
    # wanted, say so in docs/install.md (RBAC, "Secrets") and the chart, then change this line
    assert ("", "secrets", "watch") in watched(), "config tracking watches Secrets (docs/install.md)"
