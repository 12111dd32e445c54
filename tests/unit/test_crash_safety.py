"""The smaller crash-safety defects of issue 9, each pinned by a test that fails on the code
before its fix (the whole-release faults are in test_faults.py)."""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import timedelta

import pytest

from canary.adapters.kube import Kube
from canary.models import Canary
from canary.operator import Caches, NotLeader, Operator, Options, WatchCache
from canary.reconciler import _secret_lookup, _template_lookup, reconcile
from canary.routers.istio import IstioRouter
from canary.types import Routes
from tests.unit.faultworld import NS, FaultWorld, image
from tests.unit.fakeapi import FakeApiServer


def _vs_canary() -> Canary:
    return Canary.model_validate({
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS, "uid": "u1"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898}, "analysis": {"interval": "10s", "stepWeight": 10}}})


async def test_a_route_write_is_never_dropped_for_equalling_a_stale_cached_copy():
    """9.6: the watch has not delivered our own 70/30 write yet; 100/0 must still be written."""
    api = FakeApiServer()
    caches = Caches()
    caches.routes["virtualservices"] = WatchCache()
    caches.routes["destinationrules"] = WatchCache()
    kube = api.kube()
    kube.on_written = caches.written  # the operator wires this (write-through)
    router = IstioRouter(kube, cache=caches.route_object)
    canary = _vs_canary()
    await router.reconcile(canary)
    vs = api.get("networking.istio.io", NS, "virtualservices", "podinfo")
    caches.routes["virtualservices"].update({"type": "ADDED", "object": copy.deepcopy(vs)})  # the watch: 100/0
    await router.set_routes(canary, Routes(70, 30))
    # the watch event of that write is late: the stale ADDED copy arrives again
    caches.routes["virtualservices"].update({"type": "MODIFIED", "object": copy.deepcopy(vs)})
    await router.set_routes(canary, Routes(100, 0))
    from canary.routers.istio import read_routes
    assert read_routes(canary, api.get("networking.istio.io", NS, "virtualservices", "podinfo")) == Routes(100, 0)
    assert await router.get_routes(canary) == Routes(100, 0)


def test_the_watch_cache_never_goes_back_in_time():
    cache = WatchCache()
    new = {"metadata": {"namespace": "a", "name": "x", "uid": "1", "resourceVersion": "20"}}
    old = {"metadata": {"namespace": "a", "name": "x", "uid": "1", "resourceVersion": "10"}}
    cache.update({"type": "MODIFIED", "object": new})
    cache.update({"type": "MODIFIED", "object": old})
    assert cache.get("a", "x") is new
    cache.update({"type": "DELETED", "object": old})  # a late delete of an older version
    assert cache.get("a", "x") is new
    recreated = {"metadata": {"namespace": "a", "name": "x", "uid": "2", "resourceVersion": "5"}}
    cache.update({"type": "ADDED", "object": recreated})  # another object of the same name
    assert cache.get("a", "x") is recreated


async def test_a_template_not_in_the_cache_yet_is_read_through():
    """9.13: after a restart the MetricTemplate watch may lag: that is no failed check."""
    api = FakeApiServer()
    api.put({"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate",
             "metadata": {"name": "errors", "namespace": NS}, "spec": {"provider": {"type": "prometheus"},
                                                                       "query": "1"}})

    class Empty:
        def metric_template(self, namespace, name):
            return None

    class D:
        kube = api.kube()

    got = await _template_lookup(D, Empty())(NS, "errors")
    assert got["metadata"]["name"] == "errors"


async def test_a_metric_templates_secret_ref_is_read_and_decoded():
    """9.8: provider.secretRef never reached the metric provider."""
    api = FakeApiServer()
    api.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom-auth", "namespace": NS},
             "data": {"token": base64.b64encode(b"s3cret").decode()}})

    class D:
        kube = api.kube()

    assert await _secret_lookup(D)(NS, "prom-auth") == {"token": b"s3cret"}
    assert await _secret_lookup(D)(NS, "missing") is None


async def test_run_checks_gives_the_metric_provider_the_secrets(monkeypatch):
    from canary import reconciler
    from canary.adapters import prometheus

    seen = {}

    async def run_metrics(canary, server, templates, secrets=None, *args, **kw):
        seen["secrets"] = secrets
        return ()

    monkeypatch.setattr(prometheus, "run_metrics", run_metrics)
    world = FaultWorld()
    world.deps.run_metrics = None
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    await world.run_until(lambda w: "secrets" in seen, max_ticks=20)
    assert callable(seen["secrets"])
    assert reconciler  # (imported for the monkeypatch target's module)


async def test_a_stale_copy_of_the_canary_decides_nothing():
    """9.12: the status write is conditional: an older copy (another replica wrote since) gets a
    409 and none of its effects are applied."""
    world = FaultWorld()
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    stale = world.canary
    await world.run_until(lambda w: w.status.get("canaryWeight") == 20)
    routed = world.routed()
    writes = len(world.faulty.writes)
    world.now += timedelta(seconds=60)
    result = await reconcile(world.deps, stale, world.caches)
    assert result.written is None
    assert world.routed() == routed
    # at most a refused (409) status write: no route, scale or primary write
    assert {w for w in world.faulty.writes[writes:] if "events" not in w[1]} <= {
        ("PATCH", f"/apis/canary.dev/v1beta1/namespaces/{NS}/canaries/podinfo/status")}


async def test_alerts_of_a_tick_whose_status_write_failed_are_not_sent():
    world = FaultWorld()
    sent = []

    async def on_alert(canary, alert):
        sent.append(alert.message)

    world.deps.on_alert = on_alert
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    sent.clear()
    world.api.fail_next[("canaries/status", "patch")] = 500
    await world.tick()  # decides the start of the run, but its status write fails
    assert sent == []
    await world.tick()
    assert sent == ["New revision detected, progressing canary analysis."]


async def test_a_status_that_does_not_validate_is_kept_and_nothing_acts():
    """9.15: it was replaced by a blank status, which re-initialized and recorded the running
    (unanalysed) revision as promoted."""
    world = FaultWorld()
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    old = world.api.objects[("canary.dev", NS, "canaries", "podinfo")]
    broken = copy.deepcopy(old)
    broken["status"]["canaryWeight"] = 250  # out of range
    world.api._store("canary.dev", NS, "canaries", old, broken, status_only=True)
    writes = len(world.faulty.writes)
    for _ in range(3):
        await world.tick()
    assert world.status["canaryWeight"] == 250 and world.status["phase"] == "Initialized"
    assert all("/events" in p for _, p in world.faulty.writes[writes:])
    assert [e for (g, ns, p, _), e in world.api.objects.items() if p == "events" and e["reason"] == "InvalidStatus"]


async def test_a_canary_being_deleted_is_not_ticked():
    """9.10: ticks ran during the revertOnDeletion revert and could scale the target to zero."""
    world = FaultWorld()
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    obj = world.canary
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    writes = len(world.faulty.writes)
    await reconcile(world.deps, obj, world.caches)
    assert world.faulty.writes[writes:] == []


def test_a_relabelled_canary_leaves_this_shard():
    """9.11: the label selector was a handler filter: the relabelled Canary kept its loop here."""
    op = Operator(Options(label_selector="shard=a"))

    class Sched:
        size = 0

        def __init__(self):
            self.held = set()

        def upsert(self, obj):
            self.held.add(obj["metadata"]["name"])

        def remove(self, ns, name):
            self.held.discard(name)

    op.scheduler = Sched()
    body = {"metadata": {"namespace": "x", "name": "c", "labels": {"shard": "a"}}}
    op.on_canary_event({"type": "ADDED", "object": body})
    assert op.scheduler.held == {"c"}
    moved = copy.deepcopy(body)
    moved["metadata"]["labels"]["shard"] = "b"
    op.on_canary_event({"type": "MODIFIED", "object": moved})
    assert op.scheduler.held == set()


def test_a_replica_without_a_valid_lease_writes_nothing():
    """9.12: exclusivity rested on a ~3 s timing margin; now every write is fenced."""
    op = Operator(Options(leader_election=True))

    class Elector:
        is_leader = True

    op.elector = Elector()
    op._fence("patch", "/apis/canary.dev/v1beta1/namespaces/a/canaries/c/status")
    Elector.is_leader = False
    with pytest.raises(NotLeader):
        op._fence("update", "/apis/networking.istio.io/v1beta1/namespaces/a/virtualservices/c")
    op._fence("update", "/apis/coordination.k8s.io/v1/namespaces/a/leases/canary-operator-leader")


def test_the_fence_exempts_leases_only_not_names_that_contain_leases():
    """The fence let through any path containing "/leases": a replica without its Lease still
    wrote a Canary, Deployment or VirtualService whose name starts with "leases"."""
    op = Operator(Options(leader_election=True))

    class Elector:
        is_leader = False

    op.elector = Elector()
    for path in ("/apis/canary.dev/v1beta1/namespaces/a/canaries/leases/status",
                 "/apis/apps/v1/namespaces/a/deployments/leases-primary",
                 "/apis/networking.istio.io/v1beta1/namespaces/leases/virtualservices/x",
                 "/apis/coordination.k8s.io/v1/namespaces/a/leasesx/y"):
        with pytest.raises(NotLeader):
            op._fence("patch", path)
    op._fence("create", "/apis/coordination.k8s.io/v1/namespaces/a/leases")


async def test_the_kube_client_refuses_a_fenced_write_before_sending_it():
    api = FakeApiServer()
    kube: Kube = api.kube()

    def guard(verb, path):
        raise NotLeader("no")

    kube.write_guard = guard
    with pytest.raises(NotLeader):
        await kube.create("v1", "configmaps", NS, {"metadata": {"name": "x"}})
    assert api.get("", NS, "configmaps", "x") is None
    assert await kube.get("v1", "configmaps", NS, "x") is None  # reads are not fenced


def test_rollback_webhooks_are_polled_once_per_interval():
    """9.15: they were POSTed on every wake (each Deployment status change)."""
    from canary import engine
    from canary.world import World
    from tests.unit.test_engine import make_canary
    import dataclasses

    w = World(make_canary({"stepWeight": 10, "webhooks": [{"name": "rb", "type": "rollback", "url": "http://x"}]}))
    w.initialize()
    w.release("rev2")
    w.run(lambda x: x.status.canary_weight == 10)
    obs = w.observe()
    assert "rollback" in engine.plan(w.canary, w.status, obs).webhooks
    assert "rollback" not in engine.plan(w.canary, w.status, dataclasses.replace(obs, rollback_poll=False)).webhooks


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(test_a_route_write_is_never_dropped_for_equalling_a_stale_cached_copy())


async def test_a_second_canary_on_the_same_deployment_acts_on_nothing():
    """issue 10.3: two Canaries on one Deployment: the second (with skipAnalysis) promoted past
    the first one's gate. The first keeps it; the second gets a condition naming the first."""
    world = FaultWorld()
    op = Operator(Options())

    class Sched:
        size = 0

        def upsert(self, obj):
            pass

        def remove(self, ns, name):
            pass

    op.scheduler = Sched()
    first = world.canary
    first["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    second = copy.deepcopy(first)
    second["metadata"].update(name="sneaky", uid="u2", creationTimestamp="2026-01-02T00:00:00Z")
    second["spec"]["skipAnalysis"] = True
    second.pop("status", None)
    world.api.put({**second, "metadata": {k: v for k, v in second["metadata"].items() if k != "resourceVersion"}})
    for obj in (first, second):
        op.on_canary_event({"type": "ADDED", "object": obj})
    world.deps.rivals = op.targets.rivals
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:unanalysed")
    writes = len(world.faulty.writes)
    sneaky = world.api.get("canary.dev", NS, "canaries", "sneaky")
    await reconcile(world.deps, sneaky, world.caches)
    sneaky = world.api.get("canary.dev", NS, "canaries", "sneaky")
    valid = [c for c in sneaky["status"]["conditions"] if c["type"] == "Valid"]
    assert valid and "already the target of Canary podinfo" in valid[0]["message"]
    assert {p for _, p in world.faulty.writes[writes:]} <= {
        f"/api/v1/namespaces/{NS}/events", f"/apis/canary.dev/v1beta1/namespaces/{NS}/canaries/sneaky/status"}
    assert image(world.primary) == "podinfo:1"
    assert op.targets.rivals(Canary.from_obj(first)) == []


async def test_a_failed_route_write_leaves_the_status_telling_the_routed_weight():
    """I6 at the end of a tick whose route write failed (rbac: update on VirtualServices
    forbidden): the status says what is routed, the intent what was decided; the next tick
    completes it."""
    world = FaultWorld()
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    await world.run_until(lambda w: w.status.get("canaryWeight") == 20)
    world.api.fail_next[("virtualservices", "update")] = 403
    for _ in range(10):
        await world.tick()
        if world.status.get("intent", {}).get("routes", {}).get("canary") == 40:
            break
    assert world.routed() == (80, 20) and world.status["canaryWeight"] == 20  # the write failed
    assert world.status["intent"]["routes"]["canary"] == 40
    await world.tick()
    assert world.routed() == (60, 40) and world.status["canaryWeight"] == 40


async def test_a_field_the_new_status_drops_is_cleared_on_the_api_server():
    """The status is a merge patch: a nested key the decision no longer has must be sent as null.

    A mirrored blue/green release switching all traffic to the canary left the stored intent at
    `routes: {primary: 0, canary: 100, mirror: true}` (the patch omitted `mirror`), and the next
    tick's convergence mirrored the switched route (found by test_bluegreen_mirror_istio)."""
    world = FaultWorld(strategy="bluegreen", mirror=True)
    await world.run_until(lambda w: w.status.get("phase") == "Initialized")
    world.release("podinfo:2")
    seen: list[tuple] = []

    def check(w, _result):
        vs = w.api.get("networking.istio.io", NS, "virtualservices", "podinfo")
        rule = vs["spec"]["http"][-1]
        weights = tuple(d.get("weight", 100) for d in rule["route"])
        seen.append((w.status.get("phase"), weights, "mirror" in rule))
        intent = (w.status.get("intent") or {}).get("routes") or {}
        assert not (intent.get("mirror") and intent.get("canary")), ("a mirrored intent with user traffic", intent)
        assert not ("mirror" in rule and weights != (100, 0)), ("users routed to a mirrored canary", seen)

    await world.run_until(lambda w: w.status.get("phase") == "Succeeded", check=check)
    assert any(m for _, _, m in seen), seen  # it was mirrored
    assert any(w == (0, 100) for _, w, _ in seen), seen  # and switched


def test_the_target_index_follows_a_retargeted_and_a_deleted_canary():
    op = Operator(Options())

    def obj(name, target, created):
        return Canary.from_obj({"apiVersion": "canary.dev/v1beta1", "kind": "Canary",
                                "metadata": {"name": name, "namespace": NS, "creationTimestamp": created},
                                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                                         "service": {"port": 80}}})

    first, second = obj("a", "web", "2026-01-01T00:00:00Z"), obj("b", "web", "2026-01-02T00:00:00Z")
    for c in (first, second):
        op.targets.update(c.model_dump(by_alias=True), deleted=False)
    assert op.targets.rivals(second) == ["a"]
    moved = obj("a", "api", "2026-01-01T00:00:00Z")
    op.targets.update(moved.model_dump(by_alias=True), deleted=False)  # a now targets another Deployment
    assert op.targets.rivals(second) == [] and op.targets.rivals(moved) == []
    op.targets.update(moved.model_dump(by_alias=True), deleted=True)
    op.targets.update(second.model_dump(by_alias=True), deleted=True)
    assert len(op.targets) == 0 and op.targets._holders == {}
