"""Flagger manifests (written by us, one per strategy) are accepted by the real API server
with only their apiVersion changed, and nothing in them is pruned by our CRD schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
import yaml

pytestmark = pytest.mark.testbed

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "flagger").glob("*.yaml"))
PLURALS = {"Canary": "canaries", "MetricTemplate": "metrictemplates", "AlertProvider": "alertproviders"}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_flagger_manifest_accepted_unchanged(api_client, namespace, path):
    api = kubernetes.client.CustomObjectsApi(api_client)
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "flagger.app/v1beta1"
        doc["apiVersion"] = "canary.dev/v1beta1"
        doc["metadata"]["namespace"] = namespace
        created = api.create_namespaced_custom_object(
            "canary.dev", "v1beta1", namespace, PLURALS[doc["kind"]], doc, dry_run="All"
        )
        assert created["spec"] == doc["spec"], f"{path.name}: the API server changed or pruned the spec"
