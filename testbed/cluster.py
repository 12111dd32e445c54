"""The local testbed: etcd, kube-apiserver, kube-controller-manager, pod simulator,
traffic simulator and Prometheus, all on loopback, started and stopped as one.

State lives in one directory (CANARY_TESTBED_DIR, default ~/.cache/canary-operator/testbed):
kubeconfigs, tokens, keys, logs and one pid file per process, so that `down` stops
exactly what `up` started and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CANARY_CACHE", Path.home() / ".cache" / "canary-operator"))
K8S_BIN = CACHE / "k8s-v1.20.2" / "bin"

# A second, isolated testbed (e.g. one with RBAC) runs beside the first with its own
# CANARY_TESTBED_DIR and CANARY_TESTBED_PORT_OFFSET (added to every port below).
_OFFSET = int(os.environ.get("CANARY_TESTBED_PORT_OFFSET", "0") or 0)
API_PORT = 16443 + _OFFSET
ETCD_PORT = 12379 + _OFFSET
ETCD_PEER_PORT = 12380 + _OFFSET
PROM_PORT = 19090 + _OFFSET
TRAFFIC_PORT = 19101 + _OFFSET
API_URL = f"https://127.0.0.1:{API_PORT}"
PROM_URL = f"http://127.0.0.1:{PROM_PORT}"

# identities in the static token file: name -> (token, user, groups)
IDENTITIES = {
    "admin": ("canary-testbed-admin", "admin", "system:masters"),
    "operator": ("canary-testbed-operator", "canary-operator", "canary:operators"),
    # it runs every controller under its own identity (no per-controller service account
    # credentials), so under --rbac it needs the rights of all of them
    "controller-manager": ("canary-testbed-kcm", "system:kube-controller-manager", "system:masters"),
    "simulator": ("canary-testbed-sim", "canary-simulator", "system:masters"),
}

CONTROLLERS = ",".join(
    [
        "deployment",
        "replicaset",
        "garbagecollector",
        "namespace",
        "horizontalpodautoscaling",
        "serviceaccount",
        "serviceaccount-token",
        "endpoint",
    ]
)

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # the control plane's own chatter is not what we measure
        {"level": "None", "users": ["system:kube-controller-manager", "system:apiserver"]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
        {"level": "Metadata"},
    ],
}


class TestbedError(RuntimeError):
    """A clear, user-facing reason why the testbed cannot start."""


def state_dir() -> Path:
    return Path(os.environ.get("CANARY_TESTBED_DIR", CACHE / "testbed"))


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def kubeconfig(self, identity: str) -> Path:
        return self.root / f"{identity}.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def prom_targets(self) -> Path:
        return self.root / "prometheus" / "targets"

    @property
    def etcd_data(self) -> Path:
        # tmpfs when available: etcd's fsyncs are the slowest part of a loopback control plane
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.root
        return base / ("canary-testbed-etcd-" + hashlib.sha256(str(self.root).encode()).hexdigest()[:8])


def paths() -> Paths:
    return Paths(state_dir())


def say(msg: str) -> None:
    print(f"[testbed] {msg}", file=sys.stderr, flush=True)


# ---- prerequisites -------------------------------------------------------------------


def check_prerequisites(build: bool = True) -> dict[str, str]:
    """Return the binaries to use, building Kubernetes when missing; raise TestbedError naming what lacks."""
    missing = []
    found = {}
    for name, pkg in (("etcd", "etcd-server"), ("prometheus", "prometheus"), ("openssl", "openssl")):
        path = shutil.which(name)
        if not path:
            missing.append(f"{name} (apt-get install {pkg})")
        found[name] = path or ""
    if missing:
        raise TestbedError("missing: " + ", ".join(missing) + " — run scripts/setup.sh as root")
    for b in ("kube-apiserver", "kube-controller-manager"):
        if not (K8S_BIN / b).is_file():
            if not build:
                raise TestbedError(f"missing {K8S_BIN / b}: run testbed/build-k8s.sh")
            say("Kubernetes binaries not cached: building them (testbed/build-k8s.sh)")
            rc = subprocess.call(["bash", str(REPO / "testbed" / "build-k8s.sh")])
            if rc != 0:
                raise TestbedError("building kube-apiserver/kube-controller-manager failed (see above)")
        found[b] = str(K8S_BIN / b)
    return found


# ---- files ---------------------------------------------------------------------------


def _kubeconfig(token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "testbed", "cluster": {"server": API_URL, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "user"}}],
        "current-context": "testbed",
    }


def write_files(p: Paths) -> None:
    for d in (p.root, p.logs, p.pids, p.pki, p.prom_targets):
        d.mkdir(parents=True, exist_ok=True)
    tokens = p.root / "tokens.csv"
    lines = []
    for i, (_, (token, user, groups)) in enumerate(IDENTITIES.items()):
        lines.append(f'{token},{user},uid-{i}' + (f',"{groups}"' if groups else ""))
    tokens.write_text("\n".join(lines) + "\n")
    for ident, (token, _, _) in IDENTITIES.items():
        p.kubeconfig(ident).write_text(yaml.safe_dump(_kubeconfig(token)))
    (p.root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    key = p.pki / "sa.key"
    if not key.exists():
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(p.pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
    prom = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{PROM_PORT}"]}]},
            {"job_name": "traffic-simulator", "static_configs": [{"targets": [f"127.0.0.1:{TRAFFIC_PORT}"]}]},
            {
                # tests and the demo drop JSON files here to get an operator scraped
                "job_name": "dynamic",
                "file_sd_configs": [{"files": [str(p.prom_targets / "*.json")], "refresh_interval": "1s"}],
            },
        ],
    }
    (p.root / "prometheus").mkdir(exist_ok=True)
    (p.root / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(prom))


# ---- processes -----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid(p: Paths, name: str) -> int | None:
    """The pid of a component we started, if that very process still runs (a pid file also
    records the start time, so a recycled pid is not mistaken for ours)."""
    f = p.pids / f"{name}.pid"
    try:
        fields = f.read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid):
        return None
    if len(fields) > 1 and fields[1] != _start_time(pid):
        return None
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start(p: Paths, name: str, argv: list[str], env: dict | None = None) -> int:
    pid = _pid(p, name)
    if pid:
        return pid
    log = open(p.logs / f"{name}.log", "ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=str(REPO),
    )
    (p.pids / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid) or ''}\n")
    return proc.pid


def _wait(what: str, check, timeout: float, p: Paths, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _pid(p, name):
            tail = _tail(p.logs / f"{name}.log")
            raise TestbedError(f"{name} exited while starting; last log lines:\n{tail}")
        time.sleep(0.1)
    raise TestbedError(f"{what} not ready after {timeout:.0f}s; see {p.logs / (name + '.log')}\n{_tail(p.logs / (name + '.log'))}")


def _tail(f: Path, n: int = 15) -> str:
    try:
        return "\n".join(f.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _http_ok(url: str, token: str | None = None) -> bool:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = ssl._create_unverified_context()  # loopback, self-signed
    try:
        with urllib.request.urlopen(req, timeout=1, context=ctx) as r:
            return r.status == 200
    except Exception:
        return False


# name, in start order; `down` stops in reverse
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "podsim", "trafficsim", "prometheus"]


def up(rbac: bool = False) -> dict:
    """Start whatever is not running yet. Idempotent. Returns where things are."""
    p = paths()
    bins = check_prerequisites()
    fresh = not _pid(p, "kube-apiserver")
    write_files(p)
    t0 = time.monotonic()
    admin_token = IDENTITIES["admin"][0]

    if not _pid(p, "etcd"):
        shutil.rmtree(p.etcd_data, ignore_errors=True)
        _start(
            p,
            "etcd",
            [
                bins["etcd"],
                "--name=testbed",
                f"--data-dir={p.etcd_data}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
                f"--initial-cluster=testbed=http://127.0.0.1:{ETCD_PEER_PORT}",
                "--log-level=warn",
            ],
        )
    _wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), 20, p, "etcd")

    if not _pid(p, "kube-apiserver"):
        _start(
            p,
            "kube-apiserver",
            [
                bins["kube-apiserver"],
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={API_PORT}",
                "--insecure-port=0",
                f"--cert-dir={p.pki}",
                f"--token-auth-file={p.root / 'tokens.csv'}",
                "--authorization-mode=" + ("RBAC" if rbac else "AlwaysAllow"),
                f"--service-account-key-file={p.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={p.pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--disable-admission-plugins=ServiceAccount",
                f"--audit-policy-file={p.root / 'audit-policy.yaml'}",
                f"--audit-log-path={p.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",  # loopback addresses cannot be endpoints
                "--v=1",
            ],
        )
        (p.root / "mode").write_text("rbac" if rbac else "alwaysallow")
    _wait("kube-apiserver", lambda: _http_ok(f"{API_URL}/readyz", admin_token), 60, p, "kube-apiserver")

    if not _pid(p, "kube-controller-manager"):
        _start(
            p,
            "kube-controller-manager",
            [
                bins["kube-controller-manager"],
                f"--kubeconfig={p.kubeconfig('controller-manager')}",
                "--port=0",
                "--secure-port=0",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={p.pki / 'sa.key'}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--horizontal-pod-autoscaler-sync-period=5s",
                # the default client limit (20 requests/s) makes ten simultaneous rollouts
                # take seconds; a real cluster's controllers are not the bottleneck we measure
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )

    install_crds(p, [REPO / "testbed" / "crds"])

    py = sys.executable
    sim_kc = str(p.kubeconfig("simulator"))
    if not _pid(p, "podsim"):
        _start(p, "podsim", [py, "-u", "-m", "testbed.podsim", "--kubeconfig", sim_kc])
    if not _pid(p, "trafficsim"):
        _start(
            p,
            "trafficsim",
            [py, "-u", "-m", "testbed.trafficsim", "--kubeconfig", sim_kc, "--port", str(TRAFFIC_PORT)],
        )
    if not _pid(p, "prometheus"):
        data = p.root / "prometheus" / "data"
        shutil.rmtree(data, ignore_errors=True)
        _start(
            p,
            "prometheus",
            [
                bins["prometheus"],
                f"--config.file={p.root / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{PROM_PORT}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=6h",
                "--log.level=warn",
            ],
        )
    _wait("prometheus", lambda: _http_ok(f"{PROM_URL}/-/ready"), 30, p, "prometheus")
    _wait("traffic simulator", lambda: _http_ok(f"http://127.0.0.1:{TRAFFIC_PORT}/metrics"), 20, p, "trafficsim")

    info = status()
    info["started_in_seconds"] = round(time.monotonic() - t0, 1)
    info["fresh"] = fresh
    return info


def install_crds(p: Paths, dirs: list[Path]) -> None:
    """Create or replace every CRD found in dirs, then wait until each is Established."""
    import kubernetes
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # loopback, self-signed
    api_client = kubernetes.config.new_client_from_config(config_file=str(p.kubeconfig("admin")))
    ext = kubernetes.client.ApiextensionsV1Api(api_client)
    names = []
    for d in dirs:
        for f in sorted(Path(d).glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                name = doc["metadata"]["name"]
                names.append(name)
                try:
                    cur = ext.read_custom_resource_definition(name)
                    doc["metadata"]["resourceVersion"] = cur.metadata.resource_version
                    ext.replace_custom_resource_definition(name, doc)
                except kubernetes.client.ApiException as e:
                    if e.status != 404:
                        raise
                    ext.create_custom_resource_definition(doc)
    deadline = time.monotonic() + 30
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in (crd.status.conditions or [])}
            if conds.get("Established") == "True":
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise TestbedError(f"CRDs not established: {sorted(pending)}")
    api_client.close()


def down() -> list[str]:
    """Stop exactly the processes `up` started (by pid file). Returns their names."""
    p = paths()
    stopped = []
    for name in reversed(COMPONENTS):
        pid = _pid(p, name)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            stopped.append((name, pid))
    deadline = time.monotonic() + 15
    for name, pid in stopped:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _alive(pid):
                time.sleep(0.05)
    for name in COMPONENTS:
        (p.pids / f"{name}.pid").unlink(missing_ok=True)
    shutil.rmtree(p.etcd_data, ignore_errors=True)
    return [n for n, _ in stopped]


def status() -> dict:
    p = paths()
    procs = {name: _pid(p, name) for name in COMPONENTS}
    return {
        "running": all(procs.values()),
        "processes": procs,
        "api_server": API_URL,
        "kubeconfig": str(p.kubeconfig("admin")),
        "operator_kubeconfig": str(p.kubeconfig("operator")),
        "prometheus": PROM_URL,
        "traffic_simulator": f"http://127.0.0.1:{TRAFFIC_PORT}",
        "audit_log": str(p.audit_log),
        "logs": str(p.logs),
        "mode": (p.root / "mode").read_text().strip() if (p.root / "mode").exists() else None,
    }


def add_scrape_target(name: str, address: str, labels: dict | None = None) -> Path:
    """Have the testbed Prometheus scrape `address` (host:port) every second."""
    p = paths()
    p.prom_targets.mkdir(parents=True, exist_ok=True)
    f = p.prom_targets / f"{name}.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": {"job": name, **(labels or {})}}]))
    tmp.rename(f)
    return f


def remove_scrape_target(name: str) -> None:
    (paths().prom_targets / f"{name}.json").unlink(missing_ok=True)
