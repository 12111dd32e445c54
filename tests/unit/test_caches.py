"""The operator's Deployment cache (issue 12): an index of the configs each pod template refers
to instead of a scan of every Deployment on each ConfigMap/Secret event, and no managedFields."""

from __future__ import annotations

from canary.operator import DeploymentCache, Operator, Options


def dep(name: str, rv: str, cm: str | None = None, secret: str | None = None, ns: str = "shop") -> dict:
    container: dict = {"name": "app", "image": "podinfo:1"}
    if cm:
        container["envFrom"] = [{"configMapRef": {"name": cm}}]
    volumes = [{"name": "s", "secret": {"secretName": secret}}] if secret else []
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": name, "resourceVersion": rv,
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"template": {"spec": {"containers": [container], "volumes": volumes}}}}


def test_the_index_follows_every_change_of_a_template() -> None:
    c = DeploymentCache()
    c.update({"type": "ADDED", "object": dep("a", "1", cm="cfg")})
    c.update({"type": "ADDED", "object": dep("b", "2", cm="cfg", secret="tls")})
    c.update({"type": "ADDED", "object": dep("c", "3", cm="cfg", ns="other")})
    assert c.using("shop", "configmap", "cfg") == ["a", "b"]
    assert c.using("shop", "secret", "tls") == ["b"]
    assert c.using("shop", "secret", "cfg") == []
    c.update({"type": "MODIFIED", "object": dep("a", "4", cm="other-cfg")})
    assert c.using("shop", "configmap", "cfg") == ["b"]
    assert c.using("shop", "configmap", "other-cfg") == ["a"]
    c.update({"type": "MODIFIED", "object": dep("a", "2", cm="cfg")})  # older: ignored
    assert c.using("shop", "configmap", "cfg") == ["b"]
    c.update({"type": "DELETED", "object": dep("b", "5", cm="cfg", secret="tls")})
    assert c.using("shop", "configmap", "cfg") == [] and c.using("shop", "secret", "tls") == []
    assert c.users.keys() == {("shop", "configmap", "other-cfg"), ("other", "configmap", "cfg")}


def test_managed_fields_are_not_kept() -> None:
    c = DeploymentCache()
    c.update({"type": "ADDED", "object": dep("a", "1", cm="cfg")})
    held = c.get("shop", "a")
    assert held is not None and "managedFields" not in held["metadata"]
    assert held["spec"]["template"]["spec"]["containers"][0]["envFrom"]  # the template is whole


class Woken:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str]] = []

    def wake_target(self, namespace: str, name: str) -> None:
        self.targets.append((namespace, name))


def test_a_config_event_wakes_only_the_deployments_using_it() -> None:
    op = Operator(Options())
    woken = Woken()
    op.scheduler = woken  # type: ignore[assignment]
    for i in range(200):
        op.caches.deployments.update({"type": "ADDED", "object": dep(f"d{i}", str(i + 1),
                                                                     cm="cfg" if i % 50 == 0 else None)})
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop",
                                                                 "resourceVersion": "900"}, "data": {"a": "1"}}
    op._on_config("configmap", op.caches.configmaps, {"type": "MODIFIED", "object": cm})
    assert woken.targets == [("shop", "d0"), ("shop", "d100"), ("shop", "d150"), ("shop", "d50")]
