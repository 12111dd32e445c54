"""Helpers shared by the demo, the end-to-end tests and the benchmarks: run the operator
against the testbed, apply manifests, read Canaries and Prometheus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import kubernetes
import yaml

from testbed import cluster

REPO = cluster.REPO
GROUP, VERSION = "canary.dev", "v1beta1"


class OperatorProcess:
    """`canary operator` as a child process, with the operator identity and its own log file."""

    def __init__(self, name: str = "operator", metrics_port: int = 19102, extra: list[str] | None = None,
                 namespace: str | None = None, mesh_provider: str = "istio", *,
                 module: str = "canary.cli", kubeconfig: str | Path | None = None,
                 metrics_server: str | None = None, log_dir: Path | None = None, scrape: bool = True):
        """module, kubeconfig, metrics_server, log_dir: another entry point, identity or testbed
        (e.g. the RBAC testbed); scrape: register /metrics with this testbed's Prometheus."""
        self.name = name
        self.metrics_port = metrics_port
        self.extra = extra or []
        self.namespace = namespace
        self.mesh_provider = mesh_provider
        self.module = module
        self.kubeconfig = kubeconfig
        self.metrics_server = metrics_server
        self.scrape = scrape and bool(metrics_port)
        self.proc: subprocess.Popen | None = None
        self.log_path = (log_dir or cluster.paths().logs) / f"{name}.log"

    def start(self) -> "OperatorProcess":
        p = cluster.paths()
        argv = [
            sys.executable, "-u", "-m", self.module,
            "--kubeconfig", str(self.kubeconfig or p.kubeconfig("operator")),
            "operator",
            "--metrics-server", self.metrics_server or cluster.PROM_URL,
            "--mesh-provider", self.mesh_provider,
            "--metrics-port", str(self.metrics_port),
            *self.extra,
        ]
        if self.namespace:
            argv += ["--namespace", self.namespace]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if self.scrape:
            cluster.add_scrape_target(self.name, f"127.0.0.1:{self.metrics_port}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a node failure."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.scrape:
            cluster.remove_scrape_target(self.name)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def api_client() -> kubernetes.client.ApiClient:
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # loopback, self-signed
    return kubernetes.config.new_client_from_config(config_file=str(cluster.paths().kubeconfig("admin")))


def apply(client: kubernetes.client.ApiClient, doc: dict, namespace: str | None = None) -> dict:
    """Create or update (server-side merge) one object."""
    dyn = kubernetes.dynamic.DynamicClient(client)
    api = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = namespace or doc.get("metadata", {}).get("namespace")
    if api.namespaced and ns:
        doc.setdefault("metadata", {})["namespace"] = ns
    name = doc["metadata"]["name"]
    try:
        api.get(name=name, namespace=ns if api.namespaced else None)
    except kubernetes.dynamic.exceptions.NotFoundError:
        return api.create(body=doc, namespace=ns if api.namespaced else None).to_dict()
    return api.patch(body=doc, name=name, namespace=ns if api.namespaced else None,
                     content_type="application/merge-patch+json").to_dict()


def apply_file(client, path: Path, namespace: str | None = None) -> list[dict]:
    return [apply(client, d, namespace) for d in yaml.safe_load_all(Path(path).read_text()) if d]


def ensure_namespace(client, name: str, timeout: float = 90) -> None:
    """Create the namespace; if a previous run's copy is still terminating, wait for it first."""
    core = kubernetes.client.CoreV1Api(client)
    deadline = time.monotonic() + timeout
    while True:
        try:
            ns = core.read_namespace(name)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
            core.create_namespace({"metadata": {"name": name}})
            return
        if ns.status.phase != "Terminating":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} still terminating after {timeout:.0f}s")
        time.sleep(0.5)


def get_canary(client, namespace: str, name: str) -> dict | None:
    api = kubernetes.client.CustomObjectsApi(client)
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, "canaries", name)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def canary_status(client, namespace: str, name: str) -> dict:
    obj = get_canary(client, namespace, name) or {}
    return obj.get("status") or {}


def patch_deployment(client, namespace: str, name: str, image: str | None = None,
                     annotations: dict[str, str] | None = None) -> None:
    apps = kubernetes.client.AppsV1Api(client)
    dep = apps.read_namespaced_deployment(name, namespace)
    body: dict[str, Any] = {"spec": {"template": {"metadata": {}, "spec": {}}}}
    if annotations:
        body["spec"]["template"]["metadata"]["annotations"] = annotations
    if image:
        c = dep.spec.template.spec.containers[0]
        body["spec"]["template"]["spec"]["containers"] = [{"name": c.name, "image": image}]
    apps.patch_namespaced_deployment(name, namespace, body)


def prom_query(q: str) -> list[dict]:
    url = f"{cluster.PROM_URL}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.load(r)
    return data.get("data", {}).get("result", [])


def prom_value(q: str) -> float | None:
    res = prom_query(q)
    if not res:
        return None
    try:
        return float(res[-1]["value"][1])
    except (KeyError, ValueError, IndexError):
        return None


def success_rate(namespace: str, workload: str, window: str = "10s") -> float | None:
    sel = f'reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}"'
    return prom_value(
        f'sum(rate(istio_requests_total{{{sel},response_code!~"5.*"}}[{window}])) / '
        f"sum(rate(istio_requests_total{{{sel}}}[{window}])) * 100"
    )


def request_rate(namespace: str, workload: str, window: str = "10s") -> float | None:
    sel = f'reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}"'
    return prom_value(f"sum(rate(istio_requests_total{{{sel}}}[{window}]))")


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
