"""kopf wiring, and nothing else: watches feed caches and the scheduler; ticks go to the reconciler.

`canary operator --kubeconfig ... --metrics-server URL --mesh-provider istio` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
from pydantic import ValidationError

from canary.adapters import prometheus, webhooks
from canary.adapters.kube import ApiError, Kube, is_lease_path
from canary.adapters.notifiers import Notifier
from canary.adapters.autoscaler import Autoscalers
from canary.adapters.configs import ConfigCopier
from canary.adapters.workload import Workloads
from canary.leader import LeaderElector, default_identity, default_namespace
from canary.cluster import drain_event_posts
from canary.caches import Caches, DeploymentCache, WatchCache, slim_deployment  # noqa: F401 (re-exported)
from canary.metrics import OperatorMetrics
from canary.models import Canary
from canary.outbox import EventOutbox
from canary.ratelimit import TokenBucket
from canary.reconciler import Deps, TickResult, reconcile
from canary.routers import make_router
from canary.scheduler import Scheduler
from canary.shards import ShardManager, current_shard
from canary.targets import TargetIndex
from canary.heap import pin_mmap_threshold
from canary.security import configure as configure_security
from canary import kopf_run, logs
from canary.options import Options, _connection_info, _labels, _matches  # noqa: F401 (re-exported)
from canary.version import version

log = logging.getLogger("canary.operator")

GROUP, VERSION = "canary.dev", "v1beta1"
LIST_CHUNK = 50  # objects per page of an initial listing


class NotLeader(Exception):
    """This replica does not hold the Lease (any more): it must not write."""


class Operator:
    def __init__(self, opts: Options):
        self.opts = opts
        self.caches = Caches()
        self.kube: Kube | None = None
        self.deps: Deps | None = None
        self.scheduler: Scheduler | None = None
        self.metrics = OperatorMetrics()
        self.notifier: Notifier | None = None
        self.events: EventOutbox | None = None
        self._routers: dict[str, Any] = {}
        self.targets = TargetIndex()  # every Canary of every shard: the rivals of a target
        self.identity = default_identity()
        self.elector: LeaderElector | None = None
        self._elector_task: asyncio.Task | None = None
        self.shards: ShardManager | None = None
        self.registry = kopf.OperatorRegistry()
        self._register()

    # ---- setup ------------------------------------------------------------------

    def router_for(self, canary: Canary):
        provider = canary.spec.provider or self.opts.mesh_provider
        if provider not in self._routers:
            self._routers[provider] = make_router(provider, self.kube, cache=self.caches.route_object)
        return self._routers[provider]

    async def _tick(self, obj) -> float:
        if self.elector is not None and not self.elector.is_leader:
            # the lease ran out before the elector loop noticed: do not act (the scheduler
            # takes a cancelled tick as "paused" and waits for the next leadership)
            self.scheduler.pause(cancel_inflight=False)
            raise asyncio.CancelledError("not the leader")
        meta = obj.get("metadata") or {}
        logs.about(meta.get("namespace"), meta.get("name"))  # every log line of this tick names the Canary
        log.debug("tick %s/%s", meta.get("namespace"), meta.get("name"))
        if self.shards is not None:
            shard = self.shards.shard(meta.get("namespace", ""), meta.get("name", ""))
            if not self.shards.holds(shard):
                # another replica's Canary (or nobody's yet): woken when this replica takes the shard
                return TickResult(wake_after=60.0)
            current_shard.set(shard)  # this task's writes are judged as shard `shard`'s
        # alerts raised by the tick are sent (in the background) once it has decided
        with self.metrics.tick_seconds.time(), self.notifier.hold(obj):
            try:
                return await reconcile(self.deps, obj, self.caches)
            except NotLeader:
                # one lease: this replica leads no more, and resume() comes with the next
                # leadership. Shards: only this Canary's shard was lost; it is woken when the
                # shard is taken again, and every other shard's Canaries go on
                if self.shards is None:
                    self.scheduler.pause(cancel_inflight=False)
                raise asyncio.CancelledError("not the leader") from None

    def _fence(self, verb: str, path: str) -> None:
        """Kube.write_guard: with leader election, only the holder of a valid Lease writes (the
        Lease itself excepted); a replica whose renewal is overdue stops at once, mid-tick."""
        if is_lease_path(path):
            return
        if self.shards is not None:
            shard = current_shard.get()
            if shard is None or not self.shards.holds(shard):
                raise NotLeader(f"shard {shard} not held: {verb} {path} refused")
            return
        if self.elector is None:
            return
        if not self.elector.is_leader:
            raise NotLeader(f"not the leader: {verb} {path} refused")

    def _decided(self, canary, status) -> None:
        self.metrics.observe(canary, status)
        self.notifier.decided(canary, status)

    def _register(self) -> None:
        reg = self.registry
        selector = _labels(self.opts.label_selector)

        @kopf.on.startup(registry=reg)
        async def startup(settings: kopf.OperatorSettings, **_):
            settings.posting.enabled = False  # we post our own events
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="canary.dev")
            settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="canary.dev")
            settings.persistence.finalizer = "canary.dev/finalizer"
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            # the initial listing in pages: without a limit a cluster's ConfigMaps and Secrets
            # come in one response, and a few hundred 1 MiB ConfigMaps (any tenant may make
            # them) peak past the pod's memory limit before the caches drop their content
            settings.watching.chunk_size = LIST_CHUNK
            settings.networking.request_timeout = 30
            # no watch on CustomResourceDefinitions (a cluster-wide right the operator does not
            # otherwise need): the watched resources are discovered once, at startup, so route
            # CRDs (Istio, Gateway API) installed later are served after a restart
            settings.scanning.disabled = True
            self.kube = Kube.from_config(self.opts.kubeconfig, connections=self.opts.kube_connections,
                                         user_agent=f"canary-operator/{version()} ({self.identity})")
            self.kube.on_written = self.caches.written  # caches never older than our own writes
            self.kube.write_guard = self._fence
            self.kube.on_request = self.metrics.observe_api  # where the time goes (issue 12)
            if self.opts.kube_qps > 0:
                self.kube.rate = TokenBucket(self.opts.kube_qps, self.opts.kube_burst)
            self.events = EventOutbox(self.kube)  # Events sent off the tick's critical path
            self.notifier = Notifier(self.kube, self.caches.alert_provider, self.caches.deployment,
                                     default_url=self.opts.alert_webhook, on_delivery=self.metrics.observe_alert,
                                     cluster_name=self.opts.cluster_name)
            self.deps = Deps(
                kube=self.kube,
                workloads=Workloads(self.kube, selector_labels=self.opts.selector_labels),
                router_for=self.router_for,
                events=self.events,
                metrics_server=self.opts.metrics_server,
                mesh_provider=self.opts.mesh_provider,
                on_decision=self._decided,
                on_alert=self.notifier.on_alert,
                configs=ConfigCopier(self.kube),
                autoscalers=Autoscalers(self.kube),
                observe_metrics=self.metrics.observe_metric_run,
                phase=self.metrics.time_phase,
                rivals=self.targets.rivals,
                event_webhook=self.opts.event_webhook,
            )
            self.metrics.bind_kube(self.kube)
            if self.opts.metrics_port:
                self.metrics.serve(self.opts.metrics_port)
            self.metrics.info.labels(version(), self.opts.mesh_provider).set(1)
            self.scheduler = Scheduler(self._tick, max_concurrent=self.opts.max_concurrent,
                                       max_per_namespace=self.opts.max_per_namespace,
                                       tick_timeout=self.opts.tick_timeout)
            self.metrics.bind_scheduler(self.scheduler)
            self.scheduler.on_queue_wait = lambda seconds: self.metrics.observe_phase("queue", seconds)
            if self.opts.shards > 1:
                self._start_sharding()
            elif self.opts.leader_election:
                self._start_leader_election()
            log.info("canary-operator started: provider=%s metrics-server=%s namespace=%s",
                     self.opts.mesh_provider, self.opts.metrics_server, self.opts.namespace or "(all)")

        @kopf.on.login(registry=reg)
        def login(**_):
            # a private registry does not inherit kopf's default login; the same loaders as our
            # own client (kubeconfig, else in-cluster service account)
            return _connection_info(self.opts.kubeconfig)

        @kopf.on.cleanup(registry=reg)
        async def cleanup(**_):
            await self._drain()
            if self.events is not None:
                await self.events.aclose(timeout=5.0)
            if self.notifier is not None:
                await self.notifier.aclose(timeout=5.0)
            await drain_event_posts(timeout=5.0)
            await webhooks.aclose_shared_clients()
            await prometheus.aclose_shared_clients()
            if self.kube is not None:
                await self.kube.aclose()

        @kopf.on.event("apps", "v1", "deployments", registry=reg)
        async def on_deployment(event, **_):
            key = self.caches.deployments.update(event)
            if key and self.scheduler is not None:
                self.scheduler.wake_target(*key)

        for group, plural in (("networking.istio.io", "virtualservices"),
                              ("networking.istio.io", "destinationrules"),
                              ("gateway.networking.k8s.io", "httproutes")):
            self.caches.routes[plural] = WatchCache()

            @kopf.on.event(group, plural, registry=reg)
            async def on_route(event, _plural=plural, **_):
                self.caches.routes[_plural].update(event)

        # config tracking: a change of a ConfigMap's or Secret's data alone starts an analysis.
        # Watching Secrets is deliberate (see docs/install.md): only tracked types are kept.
        @kopf.on.event("", "v1", "configmaps", registry=reg)
        async def on_configmap(event, **_):
            self._on_config("configmap", self.caches.configmaps, event)

        @kopf.on.event("", "v1", "secrets", registry=reg)
        async def on_secret(event, **_):
            self._on_config("secret", self.caches.secrets, event)

        @kopf.on.delete(GROUP, VERSION, "canaries", labels=selector or None, registry=reg,
                        when=lambda spec, **_: bool(spec.get("revertOnDeletion")))
        async def on_delete(body, retry, **_):
            meta = body.get("metadata") or {}
            if self.shards is not None:
                shard = self.shards.shard(meta.get("namespace", ""), meta.get("name", ""))
                if not self.shards.holds(shard):
                    raise kopf.TemporaryError(f"shard {shard} is another replica's: it reverts this Canary", delay=5)
                current_shard.set(shard)
            elif self.elector is not None and not self.elector.is_leader:
                # one actor: only the leader reverts (the others retry until the finalizer is gone)
                raise kopf.TemporaryError("not the leader: the leader reverts this Canary", delay=5)
            await self._revert(body, retry)

        @kopf.on.event(GROUP, VERSION, "metrictemplates", registry=reg)
        async def on_template(event, **_):
            self.caches.templates.update(event)

        @kopf.on.event(GROUP, VERSION, "alertproviders", registry=reg)
        async def on_alert_provider(event, **_):
            self.caches.alert_providers.update(event)

        # every Canary event, filtered here rather than by kopf: a Canary relabelled out of this
        # shard must leave its loop here, or two shards would tick it
        @kopf.on.event(GROUP, VERSION, "canaries", registry=reg)
        async def on_canary(event, **_):
            self.on_canary_event(event)

    def on_canary_event(self, event: dict) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        self.targets.update(obj, deleted=event.get("type") == "DELETED")
        ours = _matches(meta.get("labels") or {}, _labels(self.opts.label_selector))
        if event.get("type") == "DELETED" or not ours:
            self.scheduler.remove(meta.get("namespace", ""), meta.get("name", ""))
            self.metrics.forget(meta.get("namespace", ""), meta.get("name", ""))
        else:
            self.scheduler.upsert(obj)
        self.metrics.canaries.set(self.scheduler.size)

    def _on_config(self, kind: str, cache: WatchCache, event: dict) -> None:
        key = cache.update(event)
        if key and self.scheduler is not None and event.get("type") is not None:
            for dep_name in self.caches.deployments.using(key[0], kind, key[1]):
                self.scheduler.wake_target(key[0], dep_name)

    async def _revert(self, body, retry: int) -> None:
        """revertOnDeletion: give the traffic back to the target before the Canary goes.

        The phase becomes Terminating first (no tick acts on a Canary being deleted), and
        Terminated once the target serves again. A Canary whose spec (or status) does not
        validate cannot be reverted: it is let go (the finalizer removed), never held forever."""
        try:
            canary = Canary.from_obj(dict(body))
        except ValidationError as e:
            meta = body.get("metadata") or {}
            log.error("%s/%s cannot be reverted, its spec does not validate (%s); deleting it as it is",
                      meta.get("namespace"), meta.get("name"), e.errors()[:1])
            return
        await self._set_phase(body, "Terminating")
        target = self.caches.deployment(canary.namespace, canary.spec.target_ref.name)
        if target is None:
            target = await self.kube.get("apps/v1", "deployments", canary.namespace, canary.spec.target_ref.name)
        if target is not None:
            result = await self.deps.workloads.finalize(canary, target, force=retry >= 20)
            if not result.done:
                raise kopf.TemporaryError(f"waiting for {canary.spec.target_ref.name} to be ready", delay=3)
        await self.router_for(canary).finalize(canary)
        await self._set_phase(body, "Terminated")
        log.info("reverted %s/%s: traffic back on %s", canary.namespace, canary.name, canary.spec.target_ref.name)

    async def _set_phase(self, body, phase: str) -> None:
        meta = body.get("metadata") or {}
        if ((body.get("status") or {}).get("phase")) == phase:
            return
        try:
            await self.kube.patch("canary.dev/v1beta1", "canaries", meta.get("namespace"), meta.get("name"),
                                  {"status": {"phase": phase}}, subresource="status")
        except ApiError as e:
            log.info("phase %s not written for %s/%s: %s", phase, meta.get("namespace"), meta.get("name"), e)

    # ---- leader election and graceful shutdown ------------------------------------------

    def _start_leader_election(self) -> None:
        """Ticks wait until this replica holds the Lease; the watches fill the caches meanwhile."""
        self.scheduler.pause()
        self.elector = LeaderElector(
            self.kube,
            self.opts.leader_election_namespace or default_namespace(),
            self.opts.leader_election_id,
            self.identity,
            on_started_leading=self.scheduler.resume,
            on_stopped_leading=self._stopped_leading,
        )
        self._elector_task = asyncio.create_task(self.elector.run(), name="leader-election")
        log.info("leader election on: lease %s/%s, identity %s; waiting to lead",
                 self.elector.namespace, self.elector.name, self.identity)

    def _start_sharding(self) -> None:
        """--shards N: this replica acts on the Canaries of the shards whose Lease it holds."""
        n = self.opts.shards
        self.shards = ShardManager(
            self.kube, self.opts.leader_election_namespace or default_namespace(), self.opts.leader_election_id,
            self.identity, n,
            on_acquired=lambda k: self.scheduler.wake_where(lambda key: self.shards.shard(*key) == k),
            on_lost=self._lost_shard)
        self._elector_task = asyncio.create_task(self.shards.run(), name="shards")
        log.info("sharding on: %d shards, leases %s/%s-0..%d, identity %s",
                 n, self.shards.namespace, self.opts.leader_election_id, n - 1, self.identity)

    def _lost_shard(self, k: int) -> None:
        cancelled = self.scheduler.cancel_where(lambda key: self.shards.shard(*key) == k) if self.scheduler else 0
        log.warning("shard %d lost: %d tick(s) in flight cancelled", k, cancelled)

    def _stopped_leading(self) -> None:
        cancelled = self.scheduler.pause(cancel_inflight=True) if self.scheduler else 0
        log.warning("not the leader any more: ticks paused (%d in flight cancelled)", cancelled)

    async def abandon(self) -> None:
        """After kopf stopped on an error: nothing of this instance may act any more."""
        if self.scheduler is not None:
            self.scheduler.pause()
            await self.scheduler.stop()
        if self._elector_task is not None:
            self._elector_task.cancel()
            await asyncio.gather(self._elector_task, return_exceptions=True)
        if self.kube is not None:
            await self.kube.aclose()
        await asyncio.to_thread(self.metrics.close)  # the port, for the next operator

    async def _drain(self) -> None:
        """SIGTERM: let the running ticks finish (bounded, while the Lease is still renewed),
        then give the Lease up so that another replica takes over at once."""
        if self.scheduler is not None:
            running = self.scheduler.in_flight
            finished = await self.scheduler.drain(self.opts.shutdown_timeout)
            log.info("shutdown: %d tick(s) were running; %s", running,
                     "all finished" if finished else f"cut short after {self.opts.shutdown_timeout:.0f}s")
        if self.elector is not None:
            await self.elector.release()
        if self.shards is not None:
            await self.shards.release()
        if self._elector_task is not None:
            self._elector_task.cancel()
            await asyncio.gather(self._elector_task, return_exceptions=True)


async def run(opts: Options) -> None:
    if opts.kubeconfig:
        os.environ["KUBECONFIG"] = opts.kubeconfig  # kopf's own login reads it
    configure_security(opts.security)
    stop = kopf_run.Stop()
    while True:
        # a fresh operator each time, as after a process restart: nothing is carried over but
        # what the API server holds (docs/design.md, crash safety)
        op = Operator(opts)
        why = "by itself (a watch failed)"  # kopf returns normally then too (canary/kopf_run.py)
        try:
            await kopf_run.run_once(stop, op.registry, opts.namespace, opts.liveness)
        except Exception as e:  # noqa: BLE001 - e.g. watches lost while the API server restarts
            why = f"on an error ({type(e).__name__}: {e})"
        if stop.signal is not None:
            return  # stopped by a signal
        log.error("the operator stopped %s; starting again in 2 s", why)
        await op.abandon()
        await stop.sleep(2)
        if stop.signal is not None:
            return


def main(opts: Options) -> None:
    pin_mmap_threshold()  # large watch events must not stay in the heap (canary/heap.py)
    asyncio.run(run(opts))
