"""The operator's options, and the small pure helpers of its kopf wiring (canary.operator)."""

from __future__ import annotations

from dataclasses import dataclass, field

import kopf

from canary.adapters.kube import load_configuration
from canary.leader import DEFAULT_NAME as LEADER_LEASE
from canary.security import Policy


@dataclass
class Options:
    kubeconfig: str | None = None
    metrics_server: str = "http://prometheus:9090"
    mesh_provider: str = "istio"
    namespace: str | None = None  # None: all namespaces
    label_selector: str | None = None  # only Canaries with these labels (sharding)
    selector_labels: tuple[str, ...] = ("app", "name", "app.kubernetes.io/name")  # pod labels for selectors
    metrics_port: int = 0  # 0: no metrics endpoint
    max_concurrent: int = 200  # ticks at once (each holds its slot while it waits on the network too)
    max_per_namespace: int | None = None  # a namespace's share (canary/slots.py); None: a fifth of max_concurrent
    tick_timeout: float = 120.0  # seconds a tick may take before it is cut
    kube_qps: float = 0.0  # client-side API requests per second (0: no limit), as client-go's --kube-api-qps
    kube_burst: int = 100  # requests that may go at once above kube_qps
    kube_connections: int = 16  # API requests in flight at once, each on a kept-alive connection
    liveness: str | None = None
    alert_webhook: str | None = None  # generic alert webhook for Canaries without analysis.alerts
    event_webhook: str | None = None  # gets the Events of Canaries without `event` webhooks (--event-webhook)
    cluster_name: str = ""  # shown in every alert (--cluster-name)
    leader_election: bool = False  # several replicas: only the Lease holder ticks (canary/leader.py)
    leader_election_namespace: str | None = None  # None: the pod's own namespace
    leader_election_id: str = LEADER_LEASE  # the Lease's name; one per shard
    shards: int = 1  # > 1: Canaries split into shards, one Lease each, claimed by the replicas (canary/shards.py)
    shutdown_timeout: float = 20.0  # on SIGTERM, seconds the running ticks get to finish
    security: Policy = field(default_factory=Policy)  # egress, cross-namespace refs (canary/security.py)



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


def _matches(labels: dict, selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _labels(selector: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (selector or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out
