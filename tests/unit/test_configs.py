"""Config tracking: reference scanning, checksums, what is skipped, copy naming for shared
configs (Flagger #1930), and the copier's write rules against an in-memory API server."""

from __future__ import annotations

import copy

import pytest

from canary.adapters.configs import (
    SOURCE_ANNOTATION,
    ConfigCopier,
    ConfigError,
    build_copy,
    choose_copy_name,
    config_refs,
    content_checksum,
    copy_name_candidates,
    copy_relation,
    tracked_configs,
)
from canary.adapters.workload import build_primary_deployment
from canary.models import Canary
from canary.revision import config_checksum, revision
from tests.unit.fakeapi import FakeApiServer

NS = "test"


def make_canary(name: str = "podinfo", target: str | None = None, uid: str | None = None) -> Canary:
    return Canary.from_obj({
        "apiVersion": "canary.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target or name},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10},
        },
    })


def configmap(name: str, data: dict | None = None, **meta) -> dict:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, **meta}}
    if data is not None:
        obj["data"] = data
    return obj


def secret(name: str, data: dict | None = None, type_: str | None = "Opaque", **meta) -> dict:
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS, **meta},
           "data": data or {"k": "dg=="}}
    if type_ is not None:
        obj["type"] = type_
    return obj


POD_SPEC = {
    "volumes": [
        {"name": "a", "configMap": {"name": "vol-cm"}},
        {"name": "b", "secret": {"secretName": "vol-secret", "optional": True}},
        {"name": "c", "projected": {"sources": [
            {"configMap": {"name": "proj-cm"}},
            {"secret": {"name": "proj-secret", "optional": False}},
            {"serviceAccountToken": {"path": "token"}},
            {"downwardAPI": {"items": []}},
        ]}},
        {"name": "d", "emptyDir": {}},
    ],
    "initContainers": [{
        "name": "init",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "x"}}}],
        "envFrom": [{"secretRef": {"name": "init-secret", "optional": True}}],
    }],
    "containers": [{
        "name": "app",
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "a", "optional": True}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "b"}}},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "envfrom-cm"}, "prefix": "P_"},
                    {"secretRef": {"name": "envfrom-secret"}}],
    }],
}


# ---- scanning --------------------------------------------------------------------------------


def test_config_refs_finds_every_kind_of_reference():
    assert config_refs(POD_SPEC) == {
        ("configmap", "vol-cm", False),
        ("secret", "vol-secret", True),
        ("configmap", "proj-cm", False),
        ("secret", "proj-secret", False),
        ("configmap", "init-cm", False),
        ("secret", "init-secret", True),
        ("configmap", "env-cm", True),
        ("secret", "env-secret", False),
        ("configmap", "envfrom-cm", False),
        ("secret", "envfrom-secret", False),
    }


def test_config_refs_of_nothing():
    assert config_refs(None) == set()
    assert config_refs({"containers": [{"name": "a", "image": "x"}]}) == set()


def lookup_of(*objs: dict):
    index = {(o["kind"].lower(), o["metadata"]["name"]): o for o in objs}
    return lambda kind, name: index.get((kind, name))


def test_tracked_configs_checksums_are_flaggers():
    cm = configmap("vol-cm", {"a": "1", "b": "<2>"})
    sec = secret("env-secret", {"password": "c2VjcmV0"})
    spec = {"volumes": [{"name": "v", "configMap": {"name": "vol-cm"}}],
            "containers": [{"name": "c", "env": [
                {"name": "P", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "password"}}}]}]}
    tracked, problems = tracked_configs(spec, lookup_of(cm, sec))
    assert problems == []
    assert tracked == {"configmap/vol-cm": config_checksum({"a": "1", "b": "<2>"}),
                       "secret/env-secret": config_checksum({"password": "c2VjcmV0"})}


def test_missing_optional_refs_are_skipped_and_missing_mandatory_ones_are_problems():
    present = [configmap(n, {"x": n}) for n in ("vol-cm", "proj-cm", "init-cm", "envfrom-cm")]
    present += [secret(n) for n in ("proj-secret", "env-secret")]
    tracked, problems = tracked_configs(POD_SPEC, lookup_of(*present))
    # env-cm, vol-secret and init-secret are optional and missing: skipped silently
    assert set(tracked) == {"configmap/vol-cm", "configmap/proj-cm", "configmap/init-cm",
                            "configmap/envfrom-cm", "secret/proj-secret", "secret/env-secret"}
    assert problems == ["Secret envfrom-secret is referenced by the pod template but does not exist"]


def test_a_config_referenced_both_optionally_and_not_is_mandatory():
    spec = {"volumes": [{"name": "v", "configMap": {"name": "cfg", "optional": True}}],
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}
    tracked, problems = tracked_configs(spec, lookup_of())
    assert tracked == {}
    assert problems == ["ConfigMap cfg is referenced by the pod template but does not exist"]


@pytest.mark.parametrize("key", ["flagger.app/config-tracking", "canary.dev/config-tracking"])
@pytest.mark.parametrize("value", ["disabled", "disable", "Disabled"])
def test_tracking_disabled_by_annotation(key, value):
    spec = {"volumes": [{"name": "v", "configMap": {"name": "cfg"}}, {"name": "s", "secret": {"secretName": "sec"}}]}
    cm = configmap("cfg", {"a": "1"}, annotations={key: value})
    tracked, problems = tracked_configs(spec, lookup_of(cm, secret("sec")))
    assert tracked == {"secret/sec": config_checksum({"k": "dg=="})} and problems == []
    cm["metadata"]["annotations"][key] = "enabled"
    assert "configmap/cfg" in tracked_configs(spec, lookup_of(cm, secret("sec")))[0]


@pytest.mark.parametrize("type_,tracked_", [
    ("Opaque", True), (None, True), ("kubernetes.io/basic-auth", True), ("kubernetes.io/ssh-auth", True),
    ("kubernetes.io/tls", True), ("kubernetes.io/dockerconfigjson", False), ("kubernetes.io/dockercfg", False),
    ("kubernetes.io/service-account-token", False), ("bootstrap.kubernetes.io/token", False),
    ("example.com/custom", False),
])
def test_secret_types(type_, tracked_):
    spec = {"volumes": [{"name": "s", "secret": {"secretName": "sec"}}]}
    tracked, problems = tracked_configs(spec, lookup_of(secret("sec", type_=type_)))
    assert ("secret/sec" in tracked) is tracked_ and problems == []


def test_checksum_changes_only_when_the_content_changes():
    cm = configmap("cfg", {"a": "1"}, labels={"x": "1"}, resourceVersion="5")
    base = content_checksum(cm)
    relabelled = copy.deepcopy(cm)
    relabelled["metadata"].update(labels={"x": "2"}, annotations={"note": "n"}, resourceVersion="9")
    assert content_checksum(relabelled) == base
    changed = copy.deepcopy(cm)
    changed["data"]["a"] = "2"
    assert content_checksum(changed) != base
    added = copy.deepcopy(cm)
    added["data"]["b"] = "1"
    assert content_checksum(added) != base
    # binaryData counts too (Flagger ignores it); without it the value is Flagger's
    binary = copy.deepcopy(cm)
    binary["binaryData"] = {"blob": "AAE="}
    assert content_checksum(binary) != base
    assert base == config_checksum({"a": "1"})
    # and the revision the engine compares moves with it
    assert revision("abc", {"configmap/cfg": base}) != revision("abc", {"configmap/cfg": content_checksum(changed)})


# ---- copy naming ----------------------------------------------------------------------------------


def copy_of(name: str, source_key: str | None, owner: Canary | None = None, api_version: str = "canary.dev/v1beta1",
            owner_name: str | None = None, uid: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": NS}
    if source_key:
        meta["annotations"] = {SOURCE_ANNOTATION: source_key}
    if owner is not None or owner_name:
        meta["ownerReferences"] = [{"apiVersion": api_version, "kind": "Canary",
                                    "name": owner_name or owner.name,
                                    "uid": uid or (owner.metadata["uid"] if owner else "other"),
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def existing_of(*objs: dict):
    index = {o["metadata"]["name"]: o for o in objs}
    return index.get


def test_single_user_keeps_flaggers_name():
    a = make_canary("a")
    assert choose_copy_name(a, "configmap/shared", existing_of()) == "shared-primary"
    assert choose_copy_name(a, "configmap/shared", existing_of(copy_of("shared-primary", "configmap/shared", a))) \
        == "shared-primary"


def test_a_shared_config_gets_one_copy_per_target():
    a, b = make_canary("a"), make_canary("b", target="web")
    taken = copy_of("shared-primary", "configmap/shared", a)
    assert copy_relation(taken, b, "configmap/shared") == "foreign"
    assert choose_copy_name(b, "configmap/shared", existing_of(taken)) == "shared-web-primary"
    # once chosen, the name sticks even when the first copy goes away
    own = copy_of("shared-web-primary", "configmap/shared", b)
    assert choose_copy_name(b, "configmap/shared", existing_of(own)) == "shared-web-primary"


def test_flagger_copies_are_adopted_and_user_objects_are_not_touched():
    a = make_canary("a")
    flaggers = copy_of("cfg-primary", None, owner_name="a", api_version="flagger.app/v1beta1", uid="old")
    assert copy_relation(flaggers, a, "configmap/cfg") == "adoptable"
    assert choose_copy_name(a, "configmap/cfg", existing_of(flaggers)) == "cfg-primary"
    stale = copy_of("cfg-primary", "configmap/cfg", owner_name="a", uid="previous-incarnation")
    assert copy_relation(stale, a, "configmap/cfg") == "adoptable"
    users = copy_of("cfg-primary", None)  # a user's own ConfigMap that happens to be called so
    assert copy_relation(users, a, "configmap/cfg") == "foreign"
    assert choose_copy_name(a, "configmap/cfg", existing_of(users)) == "cfg-a-primary"
    orphan = copy_of("cfg-primary", "configmap/cfg")  # ours once, owner reference removed
    assert copy_relation(orphan, a, "configmap/cfg") == "adoptable"


def test_a_copy_of_another_source_with_the_same_name_is_not_reused():
    # config "cfg-a" (copy "cfg-a-primary") and config "cfg" of target "a" would collide
    a = make_canary("a")
    other = copy_of("cfg-a-primary", "configmap/cfg-a", a)
    mine = copy_of("cfg-primary", "configmap/cfg", owner_name="z")
    name = choose_copy_name(a, "configmap/cfg", existing_of(other, mine))
    assert name not in ("cfg-primary", "cfg-a-primary") and name.startswith("cfg-") and name.endswith("-primary")
    # a secret and a configmap of the same name are different sources
    assert copy_relation(copy_of("cfg-primary", "configmap/cfg", a), a, "secret/cfg") == "foreign"


def test_no_free_name_is_an_error():
    a = make_canary("a")
    names = copy_name_candidates(a, "x")
    assert names[:2] == ["x-primary", "x-a-primary"] and len(names) == 3
    taken = existing_of(*[copy_of(n, None) for n in names])
    with pytest.raises(ConfigError, match="no name is free"):
        choose_copy_name(a, "configmap/x", taken)


def test_long_names_fit():
    a = make_canary("a", target="t" * 55)  # longer is refused: <target>-canary must fit 63
    name = choose_copy_name(a, "configmap/" + "c" * 250, existing_of(copy_of("c" * 250 + "-primary", None)))
    assert len(name) <= 253 and name.endswith("-primary")


def test_copy_shapes():
    a = make_canary("a")
    cm = configmap("cfg", {"a": "1"}, labels={"app": "x", "kustomize.toolkit.fluxcd.io/name": "apps"},
                   annotations={"note": "n"}, resourceVersion="3", uid="u")
    cm["binaryData"] = {"b": "AAE="}
    out = build_copy(a, "configmap/cfg", cm, "cfg-primary")
    assert out == {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg-primary", "namespace": NS, "labels": {"app": "x"},
                     "annotations": {SOURCE_ANNOTATION: "configmap/cfg"},
                     "ownerReferences": [{"apiVersion": "canary.dev/v1beta1", "kind": "Canary", "name": "a",
                                          "uid": "uid-a", "controller": True, "blockOwnerDeletion": True}]},
        "data": {"a": "1"}, "binaryData": {"b": "AAE="},
    }
    tls = build_copy(a, "secret/tls", secret("tls", {"tls.crt": "Yw=="}, type_="kubernetes.io/tls"), "tls-primary")
    assert tls["type"] == "kubernetes.io/tls" and tls["data"] == {"tls.crt": "Yw=="} and tls["kind"] == "Secret"


def test_primary_deployment_uses_the_copy_names():
    target = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": copy.deepcopy(POD_SPEC)}},
    }
    dep = build_primary_deployment(make_canary("b", target="web"), target, "r",
                                   config_copies={"configmap/vol-cm": "vol-cm-web-primary",
                                                  "configmap/init-cm": "init-cm-primary",
                                                  "secret/proj-secret": "proj-secret-web-primary",
                                                  "secret/envfrom-secret": "envfrom-secret-primary"})
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == "vol-cm-web-primary"
    assert pod["volumes"][1]["secret"]["secretName"] == "vol-secret"  # not tracked: shared
    assert pod["volumes"][2]["projected"]["sources"][0]["configMap"]["name"] == "proj-cm"
    assert pod["volumes"][2]["projected"]["sources"][1]["secret"]["name"] == "proj-secret-web-primary"
    assert pod["initContainers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == "init-cm-primary"
    assert pod["containers"][0]["envFrom"][1]["secretRef"]["name"] == "envfrom-secret-primary"
    assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "envfrom-cm"
    # the target itself is untouched
    assert target["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "vol-cm"


# ---- the copier against an in-memory API ---------------------------------------------------------


class World:
    def __init__(self):
        self.api = FakeApiServer()
        self.kube = self.api.kube()

    def put(self, obj):
        return self.api.put(obj)

    def get(self, plural, name):
        return self.api.get("", NS, plural, name)

    def lookup(self, kind, name):
        return self.get(kind + "s", name)

    def writes(self):
        return sum(1 for r in self.api.requests if r.verb in ("create", "update", "patch", "delete"))

    def tracked(self, *keys):
        out = {}
        for key in keys:
            kind, name = key.split("/")
            out[key] = content_checksum(self.lookup(kind, name))
        return out


async def test_sync_creates_copies_and_idles_without_writes():
    w = World()
    w.put(configmap("cfg", {"a": "1"}, labels={"app": "x"}))
    w.put(secret("sec", {"p": "cA=="}, type_="kubernetes.io/basic-auth"))
    a = make_canary("a")
    copier = ConfigCopier(w.kube)
    tracked = w.tracked("configmap/cfg", "secret/sec")
    names = await copier.sync(a, NS, tracked, w.lookup, init=True)
    assert names == {"configmap/cfg": "cfg-primary", "secret/sec": "sec-primary"}
    cm = w.get("configmaps", "cfg-primary")
    assert cm["data"] == {"a": "1"} and cm["metadata"]["labels"] == {"app": "x"}
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-a"
    sec = w.get("secrets", "sec-primary")
    assert sec["type"] == "kubernetes.io/basic-auth" and sec["data"] == {"p": "cA=="}
    before = w.writes()
    assert await copier.sync(a, NS, tracked, w.lookup, init=False) == names
    assert await copier.sync(a, NS, tracked, w.lookup, init=True) == names
    assert w.writes() == before, "an idle sync must not write"


async def test_sync_updates_on_promotion_only_once_a_primary_exists():
    w = World()
    w.put(configmap("cfg", {"a": "1"}))
    a = make_canary("a")
    copier = ConfigCopier(w.kube)
    await copier.sync(a, NS, w.tracked("configmap/cfg"), w.lookup, init=True)
    w.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a-primary", "namespace": NS},
           "spec": {"replicas": 1}})
    src = w.get("configmaps", "cfg")
    src["data"] = {"a": "2"}
    w.api.objects[("", NS, "configmaps", "cfg")] = src
    tracked = w.tracked("configmap/cfg")
    # (re)initialization with a running primary: its copy keeps the tested content
    await copier.sync(a, NS, tracked, w.lookup, init=True)
    assert w.get("configmaps", "cfg-primary")["data"] == {"a": "1"}
    await copier.sync(a, NS, tracked, w.lookup, init=False)
    assert w.get("configmaps", "cfg-primary")["data"] == {"a": "2"}
    # a copy that went missing is recreated even at initialization
    del w.api.objects[("", NS, "configmaps", "cfg-primary")]
    await copier.sync(a, NS, tracked, w.lookup, init=True)
    assert w.get("configmaps", "cfg-primary")["data"] == {"a": "2"}


async def test_sync_refuses_a_source_that_changed_since_it_was_tested():
    w = World()
    w.put(configmap("cfg", {"a": "1"}))
    tested = w.tracked("configmap/cfg")
    src = w.get("configmaps", "cfg")
    src["data"] = {"a": "untested"}
    w.api.objects[("", NS, "configmaps", "cfg")] = src
    with pytest.raises(ConfigError, match="changed since it was tested"):
        await ConfigCopier(w.kube).sync(make_canary("a"), NS, tested, w.lookup)
    assert w.get("configmaps", "cfg-primary") is None
    with pytest.raises(ConfigError, match="does not exist"):
        await ConfigCopier(w.kube).sync(make_canary("a"), NS, {"configmap/gone": "0"}, w.lookup)


async def test_two_canaries_sharing_a_config_promote_it_independently():
    w = World()
    w.put(configmap("shared", {"level": "info"}))
    a, b = make_canary("a"), make_canary("b", target="web")
    copier = ConfigCopier(w.kube)
    tracked = w.tracked("configmap/shared")
    assert await copier.sync(a, NS, tracked, w.lookup) == {"configmap/shared": "shared-primary"}
    assert await copier.sync(b, NS, tracked, w.lookup) == {"configmap/shared": "shared-web-primary"}
    src = w.get("configmaps", "shared")
    src["data"] = {"level": "debug"}
    w.api.objects[("", NS, "configmaps", "shared")] = src
    await copier.sync(b, NS, w.tracked("configmap/shared"), w.lookup)  # b's analysis succeeded
    assert w.get("configmaps", "shared-web-primary")["data"] == {"level": "debug"}
    assert w.get("configmaps", "shared-primary")["data"] == {"level": "info"}, "a's primary must not change"
    assert w.get("configmaps", "shared-primary")["metadata"]["ownerReferences"][0]["name"] == "a"


async def test_sync_adopts_a_flagger_copy_and_replaces_a_changed_secret_type():
    w = World()
    w.put(secret("sec", {"p": "cA=="}, type_="Opaque"))
    w.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": "sec-primary", "namespace": NS, "ownerReferences": [
               {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "a", "uid": "flagger-uid",
                "controller": True},
               {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "other", "uid": "o"}]},
           "data": {"old": "eA=="}})
    a = make_canary("a")
    await ConfigCopier(w.kube).sync(a, NS, w.tracked("secret/sec"), w.lookup)
    sec = w.get("secrets", "sec-primary")
    assert sec["type"] == "Opaque" and sec["data"] == {"p": "cA=="}
    assert [r["uid"] for r in sec["metadata"]["ownerReferences"]] == ["uid-a"]
    assert sec["metadata"]["annotations"][SOURCE_ANNOTATION] == "secret/sec"


async def test_sync_never_overwrites_a_users_object():
    w = World()
    w.put(configmap("cfg", {"a": "1"}))
    w.put(configmap("cfg-primary", {"mine": "yes"}))
    names = await ConfigCopier(w.kube).sync(make_canary("a"), NS, w.tracked("configmap/cfg"), w.lookup)
    assert names == {"configmap/cfg": "cfg-a-primary"}
    assert w.get("configmaps", "cfg-primary")["data"] == {"mine": "yes"}
    assert w.get("configmaps", "cfg-a-primary")["data"] == {"a": "1"}


def test_tracked_configs_of_a_deployment():
    from canary.adapters.configs import tracked_configs_of

    dep = {"spec": {"template": {"spec": {"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}}}
    assert tracked_configs_of(dep, lookup_of(configmap("cfg", {"a": "1"}))) == \
        ({"configmap/cfg": config_checksum({"a": "1"})}, [])
    assert tracked_configs_of(None, lookup_of()) == ({}, [])


def test_uses_config_and_slim_cache_entries():
    from canary.adapters.configs import slim_config, uses_config

    dep = {"spec": {"template": {"spec": POD_SPEC}}}
    assert uses_config(dep, "configmap", "init-cm") and uses_config(dep, "secret", "proj-secret")
    assert not uses_config(dep, "secret", "init-cm") and not uses_config(None, "configmap", "x")
    cm = configmap("cfg", {"a": "1"}, labels={"l": "1"}, managedFields=[{"manager": "kubectl"}],
                   annotations={"flagger.app/config-tracking": "disabled", "big": "x" * 1000})
    slim = slim_config(cm)
    assert slim == {"apiVersion": "v1", "kind": "ConfigMap", "canary.dev/checksum": content_checksum(cm),
                    "metadata": {"name": "cfg", "namespace": NS, "labels": {"l": "1"},
                                 "annotations": {"flagger.app/config-tracking": "disabled"}}}
    # no content is kept in memory, but tracking sees the same with the slim object
    lookup = lookup_of(cm)
    assert tracked_configs({"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}, lambda k, n: slim) == \
        tracked_configs({"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}, lookup)
    assert "data" not in slim_config(secret("s", {"token": "c2VjcmV0"}))
    # an untracked Secret type is a marker: known to exist, never tracked, no checksum
    helm = slim_config(secret("helm", {"release": "eA=="}, type_="helm.sh/release.v1"))
    assert "canary.dev/checksum" not in helm and "data" not in helm
    assert tracked_configs({"volumes": [{"name": "v", "secret": {"secretName": "helm"}}]},
                           lambda k, n: helm) == ({}, [])
    assert slim_config(secret("tls", type_="kubernetes.io/tls"))["type"] == "kubernetes.io/tls"
