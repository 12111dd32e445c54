"""Render the plain install manifest (dist/install.yaml) from the Helm chart, for teams without Helm.

    python scripts/dist.py            # writes dist/install.yaml
    python scripts/dist.py --check    # exit 1 if dist/install.yaml is not what the chart renders

The chart is rendered by the Helm engine (helm-python-sdk, the test extra) with its defaults,
release `canary-operator` in namespace `canary-system`, the CRDs included as plain objects
(`crds.install=true`, without Helm's keep annotation, which means nothing to kubectl), and the
Namespace first. `kubectl apply --server-side -f dist/install.yaml` installs everything;
tests/unit/test_chart.py checks the committed file is in sync with the chart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "canary-operator"
OUT = REPO / "dist" / "install.yaml"
RELEASE, NAMESPACE = "canary-operator", "canary-system"
ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
         "RoleBinding", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]


def render() -> str:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render({"crds": {"install": True, "keep": False}}, name=RELEASE, namespace=NAMESPACE,
                                 is_install=True)
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for path in sorted(manifests):
        if not path.endswith(".txt"):
            objs.extend(d for d in yaml.safe_load_all(manifests[path]) if d)
    objs.sort(key=lambda o: (ORDER.index(o["kind"]) if o["kind"] in ORDER else len(ORDER), o["metadata"]["name"]))
    header = ("# canary-operator: rendered from charts/canary-operator by `make dist` (scripts/dist.py).\n"
              "# Do not edit; change the chart and run `make dist`.\n"
              "# kubectl apply --server-side -f install.yaml\n")
    return header + "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that dist/install.yaml is up to date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run `make dist`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
