"""dist/install.yaml, the chart rendered by `make dist` (scripts/dist.py) for teams without Helm."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) is not installed")

REPO = Path(__file__).resolve().parents[2]


def test_dist_install_yaml_is_the_rendered_chart():
    """dist/install.yaml (for teams without Helm) is what `make dist` renders from the chart now."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dist", REPO / "scripts" / "dist.py")
    dist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dist)
    committed = (REPO / "dist" / "install.yaml").read_text()
    assert committed == dist.render(), "dist/install.yaml is stale: run `make dist`"
    objs = [o for o in yaml.safe_load_all(committed) if o]
    assert [o["kind"] for o in objs][:4] == ["Namespace"] + ["CustomResourceDefinition"] * 3
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "CustomResourceDefinition"} == \
        {"canaries.canary.dev", "metrictemplates.canary.dev", "alertproviders.canary.dev"}
    for o in objs:
        if o["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "canary-system", o["metadata"]["name"]
        assert "helm.sh/resource-policy" not in (o["metadata"].get("annotations") or {})
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= {o["kind"] for o in objs}
