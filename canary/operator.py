"""kopf wiring, and nothing else: watches feed caches and the scheduler; ticks go to the reconciler.

`canary operator --kubeconfig ... --metrics-server URL --mesh-provider istio` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import kopf

from canary.adapters.events import EventRecorder
from canary.adapters.kube import Kube, load_configuration
from canary.adapters.notifiers import Notifier
from canary.adapters.autoscaler import Autoscalers
from canary.adapters.configs import ConfigCopier, slim_config, uses_config
from canary.adapters.workload import Workloads
from canary.leader import DEFAULT_NAME as LEADER_LEASE
from canary.leader import LeaderElector, default_identity, default_namespace
from canary.metrics import OperatorMetrics
from canary.models import Canary
from canary.reconciler import Deps, reconcile
from canary.routers import make_router
from canary.scheduler import Scheduler

log = logging.getLogger("canary.operator")

GROUP, VERSION = "canary.dev", "v1beta1"


@dataclass
class Options:
    kubeconfig: str | None = None
    metrics_server: str = "http://prometheus:9090"
    mesh_provider: str = "istio"
    namespace: str | None = None  # None: all namespaces
    label_selector: str | None = None  # only Canaries with these labels (sharding)
    selector_labels: tuple[str, ...] = ("app", "name", "app.kubernetes.io/name")  # pod labels for selectors
    metrics_port: int = 0  # 0: no metrics endpoint
    max_concurrent: int = 50
    liveness: str | None = None
    alert_webhook: str | None = None  # generic alert webhook for Canaries without analysis.alerts
    leader_election: bool = False  # several replicas: only the Lease holder ticks (canary/leader.py)
    leader_election_namespace: str | None = None  # None: the pod's own namespace
    leader_election_id: str = LEADER_LEASE  # the Lease's name; one per shard
    shutdown_timeout: float = 20.0  # on SIGTERM, seconds the running ticks get to finish


class WatchCache:
    """Latest version of each watched object, keyed by (namespace, name): an informer store."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}

    def update(self, event: dict) -> tuple[str, str] | None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.get("type") == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        return key

    def get(self, namespace: str, name: str) -> dict | None:
        return self.objects.get((namespace, name))


@dataclass
class Caches:
    deployments: WatchCache = field(default_factory=WatchCache)
    templates: WatchCache = field(default_factory=WatchCache)
    alert_providers: WatchCache = field(default_factory=WatchCache)
    configmaps: WatchCache = field(default_factory=WatchCache)  # slimmed: what tracking needs
    secrets: WatchCache = field(default_factory=WatchCache)  # slimmed; untracked types not kept
    routes: dict[str, WatchCache] = field(default_factory=dict)  # plural -> cache

    def route_object(self, plural: str, namespace: str, name: str) -> dict | None:
        cache = self.routes.get(plural)
        return cache.get(namespace, name) if cache is not None else None

    def deployment(self, namespace: str, name: str) -> dict | None:
        return self.deployments.get(namespace, name)

    def metric_template(self, namespace: str, name: str) -> dict | None:
        return self.templates.get(namespace, name)

    def alert_provider(self, namespace: str, name: str) -> dict | None:
        return self.alert_providers.get(namespace, name)

    def config(self, kind: str, namespace: str, name: str) -> dict | None:
        """kind: "configmap" | "secret"."""
        return (self.configmaps if kind == "configmap" else self.secrets).get(namespace, name)


class Operator:
    def __init__(self, opts: Options):
        self.opts = opts
        self.caches = Caches()
        self.kube: Kube | None = None
        self.deps: Deps | None = None
        self.scheduler: Scheduler | None = None
        self.metrics = OperatorMetrics()
        self.notifier: Notifier | None = None
        self._routers: dict[str, Any] = {}
        self.identity = default_identity()
        self.elector: LeaderElector | None = None
        self._elector_task: asyncio.Task | None = None
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
        log.debug("tick %s/%s", meta.get("namespace"), meta.get("name"))
        # alerts raised by the tick are sent (in the background) once it has decided
        with self.metrics.tick_seconds.time(), self.notifier.hold(obj):
            return await reconcile(self.deps, obj, self.caches)

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
            settings.networking.request_timeout = 30
            # no watch on CustomResourceDefinitions (a cluster-wide right the operator does not
            # otherwise need): the watched resources are discovered once, at startup, so route
            # CRDs (Istio, Gateway API) installed later are served after a restart
            settings.scanning.disabled = True
            self.kube = Kube.from_config(self.opts.kubeconfig,
                                         user_agent=f"canary-operator/0.1.0 ({self.identity})")
            self.notifier = Notifier(self.kube, self.caches.alert_provider, self.caches.deployment,
                                     default_url=self.opts.alert_webhook, on_delivery=self.metrics.observe_alert)
            self.deps = Deps(
                kube=self.kube,
                workloads=Workloads(self.kube, selector_labels=self.opts.selector_labels),
                router_for=self.router_for,
                events=EventRecorder(self.kube),
                metrics_server=self.opts.metrics_server,
                mesh_provider=self.opts.mesh_provider,
                on_decision=self._decided,
                on_alert=self.notifier.on_alert,
                configs=ConfigCopier(self.kube),
                autoscalers=Autoscalers(self.kube),
                observe_metrics=self.metrics.observe_metric_run,
            )
            self.metrics.bind_kube(self.kube)
            if self.opts.metrics_port:
                self.metrics.serve(self.opts.metrics_port)
            self.metrics.info.labels("0.1.0", self.opts.mesh_provider).set(1)
            self.scheduler = Scheduler(self._tick, max_concurrent=self.opts.max_concurrent)
            self.metrics.bind_scheduler(self.scheduler)
            if self.opts.leader_election:
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
            if self.notifier is not None:
                await self.notifier.aclose(timeout=5.0)
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
            await self._revert(body, retry)

        @kopf.on.event(GROUP, VERSION, "metrictemplates", registry=reg)
        async def on_template(event, **_):
            self.caches.templates.update(event)

        @kopf.on.event(GROUP, VERSION, "alertproviders", registry=reg)
        async def on_alert_provider(event, **_):
            self.caches.alert_providers.update(event)

        @kopf.on.event(GROUP, VERSION, "canaries", labels=selector or None, registry=reg)
        async def on_canary(event, **_):
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            if event.get("type") == "DELETED":
                self.scheduler.remove(meta.get("namespace", ""), meta.get("name", ""))
                self.metrics.forget(meta.get("namespace", ""), meta.get("name", ""))
            else:
                self.scheduler.upsert(obj)
            self.metrics.canaries.set(self.scheduler.size)

    def _on_config(self, kind: str, cache: WatchCache, event: dict) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        slim = slim_config(obj)
        if slim is None or event.get("type") == "DELETED":
            cache.objects.pop(key, None)
        else:
            cache.objects[key] = slim
        if self.scheduler is not None and event.get("type") is not None:
            for (ns, dep_name), dep in list(self.caches.deployments.objects.items()):
                if ns == key[0] and uses_config(dep, kind, key[1]):
                    self.scheduler.wake_target(ns, dep_name)

    async def _revert(self, body, retry: int) -> None:
        """revertOnDeletion: give the traffic back to the target before the Canary goes."""
        canary = Canary.from_obj(dict(body))
        target = self.caches.deployment(canary.namespace, canary.spec.target_ref.name)
        if target is None:
            target = await self.kube.get("apps/v1", "deployments", canary.namespace, canary.spec.target_ref.name)
        if target is not None:
            result = await self.deps.workloads.finalize(canary, target, force=retry >= 20)
            if not result.done:
                raise kopf.TemporaryError(f"waiting for {canary.spec.target_ref.name} to be ready", delay=3)
        await self.router_for(canary).finalize(canary)
        log.info("reverted %s/%s: traffic back on %s", canary.namespace, canary.name, canary.spec.target_ref.name)

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

    def _stopped_leading(self) -> None:
        cancelled = self.scheduler.pause(cancel_inflight=True) if self.scheduler else 0
        log.warning("not the leader any more: ticks paused (%d in flight cancelled)", cancelled)

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
        if self._elector_task is not None:
            self._elector_task.cancel()
            await asyncio.gather(self._elector_task, return_exceptions=True)


def _connection_info(kubeconfig: str | None) -> kopf.ConnectionInfo:
    cfg = load_configuration(kubeconfig)
    token = None
    for s in cfg.auth_settings().values():
        value = s.get("value") or ""
        if s.get("in") == "header" and value.lower().startswith("bearer "):
            token = value.split(" ", 1)[1]
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        token=token,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
    )


def _labels(selector: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (selector or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


async def run(opts: Options) -> None:
    if opts.kubeconfig:
        os.environ["KUBECONFIG"] = opts.kubeconfig  # kopf's own login reads it
    op = Operator(opts)
    kwargs: dict[str, Any] = {"registry": op.registry, "standalone": True}
    if opts.namespace:
        kwargs["namespaces"] = [opts.namespace]
    else:
        kwargs["clusterwide"] = True
    if opts.liveness:
        kwargs["liveness_endpoint"] = opts.liveness
    await kopf.operator(**kwargs)


def main(opts: Options) -> None:
    asyncio.run(run(opts))
