"""Deployment readiness from the object's spec and status."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from canary.readiness import deployment_readiness
from canary.types import Ready

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def deployment(replicas=2, generation=3, observed=3, updated=2, current=2, available=2, conditions=()):
    return {
        "metadata": {"name": "podinfo", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": current,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


def test_ready():
    r = deployment_readiness(deployment(), NOW, 100, 600)
    assert r.state is Ready.READY and r.ready


def test_generation_not_observed_waits():
    r = deployment_readiness(deployment(generation=4, observed=3), NOW, 100, 600)
    assert r.state is Ready.WAITING and "observed" in r.message


def test_progress_deadline_exceeded_fails():
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "podinfo-1" has timed out progressing.'}
    r = deployment_readiness(deployment(available=0, conditions=[cond]), NOW, 100, 600)
    assert r.state is Ready.FAILED and "timed out" in r.message


def test_minimum_replicas_unavailable_for_longer_than_the_deadline_fails():
    old = (NOW - timedelta(seconds=700)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "lastUpdateTime": old}
    assert deployment_readiness(deployment(available=0, conditions=[cond]), NOW, 100, 600).state is Ready.FAILED
    assert deployment_readiness(deployment(available=0, conditions=[cond]), NOW, 100, 900).state is Ready.WAITING


def test_rollout_in_progress_waits():
    r = deployment_readiness(deployment(updated=1, current=3, available=1), NOW, 100, 600)
    assert r.state is Ready.WAITING and "1 out of 2 new replicas" in r.message
    r = deployment_readiness(deployment(updated=2, current=3, available=2), NOW, 100, 600)
    assert r.state is Ready.WAITING and "old replicas are pending termination" in r.message


def test_available_below_the_ready_threshold_waits():
    r = deployment_readiness(deployment(replicas=1, updated=1, current=1, available=0), NOW, 100, 600)
    assert r.state is Ready.WAITING
    assert r.message.endswith("0 of 1 (readyThreshold 100%) updated replicas are available")
    # 50% of 4 updated replicas = 2 must be available
    d = deployment(replicas=4, updated=4, current=4, available=2)
    assert deployment_readiness(d, NOW, 50, 600).ready
    assert not deployment_readiness(d, NOW, 100, 600).ready


def test_scaled_to_zero_is_ready_for_the_target_only():
    d = deployment(replicas=0, updated=0, current=0, available=0)
    assert deployment_readiness(d, NOW, 100, 600).ready
    r = deployment_readiness(d, NOW, 100, 600, zero_replicas_ready=False)
    assert r.state is Ready.WAITING and "scaled to zero" in r.message


def test_missing_replicas_defaults_to_one_and_missing_status_waits():
    d = {"metadata": {"name": "x", "generation": 1}, "spec": {}, "status": {"observedGeneration": 1}}
    r = deployment_readiness(d, NOW, 100, 600)
    assert r.state is Ready.WAITING and "0 out of 1" in r.message
    assert deployment_readiness({"metadata": {"generation": 1}}, NOW).state is Ready.WAITING
