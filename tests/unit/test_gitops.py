"""Generated objects are safe under GitOps: Flux does not reconcile them and Argo CD neither
prunes nor adopts them."""

from __future__ import annotations

from canary.adapters.workload import build_primary_deployment, build_services
from canary.models import Canary
from canary.routers.gatewayapi import build_httproute
from canary.routers.istio import build_destination_rules, build_virtual_service
from canary.types import Routes

GITOPS = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "argocd.argoproj.io/sync-options": "Prune=false",
}


def canary() -> Canary:
    return Canary.from_obj({
        "apiVersion": "canary.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898, "gatewayRefs": [{"name": "gw"}]},
                 "analysis": {"interval": "5s", "stepWeight": 10}},
    })


def target() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": "test",
                     "annotations": {"argocd.argoproj.io/tracking-id": "app:apps/Deployment:test/podinfo",
                                     "kustomize.toolkit.fluxcd.io/checksum": "x", "team": "a"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                 "template": {"metadata": {"labels": {"app": "podinfo"},
                                           "annotations": {"argocd.argoproj.io/tracking-id": "t"}},
                              "spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}},
    }


def test_generated_services_and_routes_carry_the_gitops_annotations():
    c = canary()
    objects = build_services(c, target()) + [build_virtual_service(c, Routes())] + build_destination_rules(c)
    objects.append(build_httproute(c, Routes(), "v1"))
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        assert GITOPS.items() <= annotations.items(), (obj["kind"], obj["metadata"]["name"], annotations)


def test_the_primary_does_not_inherit_gitops_tracking():
    primary = build_primary_deployment(canary(), target(), "r1")
    annotations = primary["metadata"].get("annotations") or {}
    assert annotations == {"team": "a"}
    template_annotations = primary["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("argocd.argoproj.io/") for k in template_annotations)
