"""Config tracking on the testbed's real API server: copies, renamed refs, checksums, no idle
writes, per-target copies of a shared ConfigMap, and garbage collection with the Canary."""

from __future__ import annotations

import asyncio
import time

import pytest

from canary.adapters.configs import SOURCE_ANNOTATION, ConfigCopier, config_refs, tracked_configs
from canary.adapters.kube import Kube
from canary.adapters.workload import Workloads
from canary.models import Canary
from canary.revision import revision, template_hash

pytestmark = pytest.mark.testbed


@pytest.fixture
async def kube(testbed):
    k = Kube.from_config(testbed["operator_kubeconfig"])
    yield k
    await k.aclose()


async def until(fn, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def deployment(ns: str, name: str, config: str = "app-config", secret: str = "app-secret") -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "volumes": [{"name": "cfg", "configMap": {"name": config}},
                                {"name": "maybe", "configMap": {"name": "not-there", "optional": True}}],
                    "containers": [{
                        "name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                        "env": [{"name": "PASSWORD",
                                 "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
                        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}],
                    }],
                },
            },
        },
    }


async def make_canary(kube: Kube, ns: str, name: str) -> Canary:
    body = {
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        # suspended: an operator running on the shared testbed (end-to-end tests) leaves it alone
        "spec": {"suspend": True,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20}},
    }
    return Canary.from_obj(await kube.create("canary.dev/v1beta1", "canaries", ns, body))


async def observe(kube: Kube, ns: str, target: dict):
    """What the operator's watch caches would give: the target's configs, tracked."""
    pod_spec = target["spec"]["template"]["spec"]
    objs = {}
    for kind, name, _ in config_refs(pod_spec):
        objs[(kind, name)] = await kube.get("v1", f"{kind}s", ns, name)
    lookup = lambda kind, name: objs.get((kind, name))  # noqa: E731
    tracked, problems = tracked_configs(pod_spec, lookup)
    return tracked, problems, lookup


def writes(kube: Kube, before: dict) -> int:
    return sum(kube.requests.get(v, 0) - before.get(v, 0) for v in ("create", "update", "patch", "delete"))


async def test_copies_renamed_refs_checksums_and_gc(kube, namespace):
    ns = namespace
    await kube.create("v1", "configmaps", ns, {
        "metadata": {"name": "app-config", "labels": {"app": "podinfo"}}, "data": {"level": "info"}})
    await kube.create("v1", "secrets", ns, {
        "metadata": {"name": "app-secret"}, "type": "Opaque", "data": {"password": "czNjcjN0"}})
    target = await kube.create("apps/v1", "deployments", ns, deployment(ns, "podinfo"))
    canary = await make_canary(kube, ns, "podinfo")

    tracked, problems, lookup = await observe(kube, ns, target)
    assert problems == []  # the optional missing ConfigMap is skipped
    assert set(tracked) == {"configmap/app-config", "secret/app-secret"}
    rev = revision(template_hash(target["spec"]["template"]), tracked)

    copier = ConfigCopier(kube)
    names = await copier.sync(canary, ns, tracked, lookup, init=True)
    assert names == {"configmap/app-config": "app-config-primary", "secret/app-secret": "app-secret-primary"}
    await Workloads(kube).initialize(canary, target, revision=rev, config_copies=names)

    cm = await kube.get("v1", "configmaps", ns, "app-config-primary")
    sec = await kube.get("v1", "secrets", ns, "app-secret-primary")
    assert cm["data"] == {"level": "info"} and cm["metadata"]["labels"] == {"app": "podinfo"}
    assert sec["data"] == {"password": "czNjcjN0"} and sec["type"] == "Opaque"
    for obj in (cm, sec):
        ref = obj["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == \
            ("Canary", "podinfo", canary.metadata["uid"], True)
    assert cm["metadata"]["annotations"][SOURCE_ANNOTATION] == "configmap/app-config"
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    pod = primary["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == "app-config-primary"
    assert pod["volumes"][1]["configMap"]["name"] == "not-there"  # untracked refs stay as they are
    assert pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "app-secret-primary"

    # idle: the same sync again reads but never writes
    before = dict(kube.requests)
    assert await copier.sync(canary, ns, tracked, lookup, init=True) == names
    assert await copier.sync(canary, ns, tracked, lookup, init=False) == names
    assert writes(kube, before) == 0

    # metadata-only change: same checksum; data change: new checksum and revision
    await kube.patch("v1", "configmaps", ns, "app-config", {"metadata": {"annotations": {"note": "x"}}})
    assert (await observe(kube, ns, target))[0] == tracked
    await kube.patch("v1", "configmaps", ns, "app-config", {"data": {"level": "debug"}})
    tracked2, _, lookup2 = await observe(kube, ns, target)
    assert tracked2["configmap/app-config"] != tracked["configmap/app-config"]
    assert tracked2["secret/app-secret"] == tracked["secret/app-secret"]
    assert revision(template_hash(target["spec"]["template"]), tracked2) != rev

    # re-initialization with a running primary keeps the tested copy; promotion updates it
    before = dict(kube.requests)
    await copier.sync(canary, ns, tracked2, lookup2, init=True)
    assert writes(kube, before) == 0
    assert (await kube.get("v1", "configmaps", ns, "app-config-primary"))["data"] == {"level": "info"}
    names2 = await copier.sync(canary, ns, tracked2, lookup2, init=False)
    assert names2 == names
    assert (await kube.get("v1", "configmaps", ns, "app-config-primary"))["data"] == {"level": "debug"}
    await Workloads(kube).promote(canary, target, revision(template_hash(target["spec"]["template"]), tracked2),
                                  config_copies=names2)
    primary = await kube.get("apps/v1", "deployments", ns, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "app-config-primary"
    before = dict(kube.requests)
    await copier.sync(canary, ns, tracked2, lookup2, init=False)
    assert writes(kube, before) == 0

    # the copies go with the Canary (garbage collection by the real controller manager)
    await kube.delete("canary.dev/v1beta1", "canaries", ns, "podinfo", propagation="Background")

    async def gone():
        return (await kube.get("v1", "configmaps", ns, "app-config-primary") is None
                and await kube.get("v1", "secrets", ns, "app-secret-primary") is None)
    await until(gone, what="copies collected")
    assert await kube.get("v1", "configmaps", ns, "app-config") is not None


async def test_shared_configmap_gets_a_copy_per_canary(kube, namespace):
    ns = namespace
    await kube.create("v1", "configmaps", ns, {"metadata": {"name": "shared"}, "data": {"level": "info"}})
    await kube.create("v1", "secrets", ns, {"metadata": {"name": "app-secret"}, "data": {"password": "eA=="}})
    a_target = await kube.create("apps/v1", "deployments", ns, deployment(ns, "alpha", config="shared"))
    b_target = await kube.create("apps/v1", "deployments", ns, deployment(ns, "beta", config="shared"))
    a, b = await make_canary(kube, ns, "alpha"), await make_canary(kube, ns, "beta")
    copier = ConfigCopier(kube)

    tracked, _, lookup = await observe(kube, ns, a_target)
    names_a = await copier.sync(a, ns, tracked, lookup, init=True)
    names_b = await copier.sync(b, ns, tracked, lookup, init=True)
    assert names_a["configmap/shared"] == "shared-primary"
    assert names_b["configmap/shared"] == "shared-beta-primary"
    await Workloads(kube).initialize(b, b_target, config_copies=names_b)
    primary_b = await kube.get("apps/v1", "deployments", ns, "beta-primary")
    assert primary_b["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "shared-beta-primary"

    # beta's new config passes its analysis and is promoted: alpha's primary copy is untouched
    await kube.patch("v1", "configmaps", ns, "shared", {"data": {"level": "debug"}})
    tracked2, _, lookup2 = await observe(kube, ns, b_target)
    await copier.sync(b, ns, tracked2, lookup2, init=False)
    assert (await kube.get("v1", "configmaps", ns, "shared-beta-primary"))["data"] == {"level": "debug"}
    assert (await kube.get("v1", "configmaps", ns, "shared-primary"))["data"] == {"level": "info"}
