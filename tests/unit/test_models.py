from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canary.duration import DURATION_PATTERN, format_duration
from canary.models import (
    AlertProvider,
    AlertProviderSpec,
    Analysis,
    Canary,
    CanarySpec,
    CanaryStatus,
    Condition,
    LastFailure,
    MetricTemplate,
    ParentRef,
    Service,
    SessionAffinity,
    StringMatch,
    Webhook,
)
from canary.types import Phase

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "flagger"


def load_docs(kind: str) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc["kind"] == kind:
                docs.append((f"{path.stem}[{i}]", doc))
    return docs


CANARIES = load_docs("Canary")
BY_NAME = {name.split("[")[0]: doc for name, doc in CANARIES}


def test_fixtures_cover_the_strategies() -> None:
    assert len(CANARIES) >= 5
    strategies = {Canary.from_obj(doc).spec.analysis.strategy for _, doc in CANARIES}  # type: ignore[union-attr]
    assert strategies == {"canary", "ab", "bluegreen"}
    assert all(doc["apiVersion"] == "flagger.app/v1beta1" for _, doc in CANARIES)


# ---- round trips without loss ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), CANARIES, ids=[n for n, _ in CANARIES])
def test_flagger_canary_round_trips(name: str, doc: dict[str, Any]) -> None:
    canary = Canary.from_obj(doc)
    assert canary.spec.dump() == doc["spec"]
    assert canary.dump() == doc
    # the same document under our group
    ours = {**doc, "apiVersion": "canary.dev/v1beta1"}
    assert Canary.from_obj(ours).dump() == ours


@pytest.mark.parametrize(("name", "doc"), load_docs("MetricTemplate"), ids=lambda x: x if isinstance(x, str) else "")
def test_metric_template_round_trips(name: str, doc: dict[str, Any]) -> None:
    assert MetricTemplate.from_obj(doc).dump() == doc


@pytest.mark.parametrize(("name", "doc"), load_docs("AlertProvider"), ids=lambda x: x if isinstance(x, str) else "")
def test_alert_provider_round_trips(name: str, doc: dict[str, Any]) -> None:
    assert AlertProvider.from_obj(doc).dump() == doc


def test_fixture_fields_are_typed_not_extra() -> None:
    """Every key of the fixtures is a declared field (nothing only survives through extra=allow)."""

    def walk(model: Any, path: str) -> list[str]:
        found = [f"{path}.{k}" for k in (model.model_extra or {})]
        for name in type(model).model_fields:
            value = getattr(model, name)
            items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
            for item in items:
                if hasattr(item, "model_fields"):
                    found += walk(item, f"{path}.{name}")
        return found

    for _, doc in CANARIES:
        assert walk(Canary.from_obj(doc), "") == []


def test_dump_defaults_to_aliases() -> None:
    analysis = Analysis(step_weight=10, step_weight_promotion=20)
    assert analysis.model_dump(exclude_none=True) == {"stepWeight": 10, "stepWeightPromotion": 20}


def test_snake_case_and_camel_case_are_both_accepted() -> None:
    by_alias = Webhook.model_validate({"name": "w", "url": "http://x", "disableTLS": True, "muteAlert": True})
    by_name = Webhook.model_validate({"name": "w", "url": "http://x", "disable_tls": True, "mute_alert": True})
    assert by_alias == by_name
    assert by_name.dump() == {"name": "w", "url": "http://x", "disableTLS": True, "muteAlert": True}
    spec = CanarySpec.model_validate({"target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": "a"}})
    assert spec.dump() == {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}}


def test_unknown_fields_are_kept() -> None:
    doc = {"interval": "1m", "stepWeight": 5, "futureField": {"a": 1}}
    assert Analysis.model_validate(doc).dump() == doc
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "canaryAnalysis": {"interval": "1m"}}
    assert CanarySpec.model_validate(spec).dump() == spec


# ---- defaults as Flagger ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [(None, 60.0), ("", 60.0), ("1m", 60.0), ("5s", 5.0), ("1m30s", 90.0), ("1s", 1.0), ("500ms", 1.0), ("2h", 7200.0)],
)
def test_interval_seconds(interval: str | None, seconds: float) -> None:
    assert Analysis.model_construct(interval=interval).interval_seconds == seconds


def test_interval_seconds_unparsable_defaults_to_a_minute() -> None:
    assert Analysis.model_construct(interval="soon").interval_seconds == 60.0


@pytest.mark.parametrize(("threshold", "value"), [(None, 1), (0, 1), (1, 1), (5, 5)])
def test_threshold_value(threshold: int | None, value: int) -> None:
    assert Analysis(threshold=threshold).threshold_value == value


@pytest.mark.parametrize(
    ("fields", "value"),
    [
        ({}, 100),
        ({"maxWeight": 50}, 50),
        ({"stepWeights": [1, 5, 30]}, 30),
        ({"stepWeights": [10, 20], "maxWeight": 90}, 20),
        ({"stepWeights": [50, 100]}, 100),
    ],
)
def test_max_weight_value(fields: dict[str, Any], value: int) -> None:
    assert Analysis.model_validate(fields).max_weight_value == value


@pytest.mark.parametrize(
    ("fields", "strategy"),
    [
        ({"stepWeight": 10}, "canary"),
        ({"stepWeights": [10, 50]}, "canary"),
        ({"iterations": 0, "stepWeight": 10}, "canary"),
        ({"iterations": 10}, "bluegreen"),
        ({"iterations": 10, "mirror": True}, "bluegreen"),
        ({"iterations": 10, "match": []}, "bluegreen"),
        ({"iterations": 10, "match": [{"headers": {"x-canary": {"exact": "1"}}}]}, "ab"),
    ],
)
def test_strategy(fields: dict[str, Any], strategy: str) -> None:
    assert Analysis.model_validate(fields).strategy == strategy


def test_fixture_strategies() -> None:
    strategies = {name: Canary.from_obj(doc).spec.analysis.strategy for name, doc in BY_NAME.items()}  # type: ignore[union-attr]
    assert strategies == {
        "ab-testing": "ab",
        "bluegreen-mirror": "bluegreen",
        "canary-progressive": "canary",
        "gatewayapi-session-affinity": "canary",
        "step-weights-keda": "canary",
    }


def test_ready_thresholds_default_to_100_but_keep_zero() -> None:
    assert Analysis().primary_ready_threshold_value == 100
    assert Analysis().canary_ready_threshold_value == 100
    assert Analysis(primary_ready_threshold=0, canary_ready_threshold=80).primary_ready_threshold_value == 0
    assert Analysis(canary_ready_threshold=80).canary_ready_threshold_value == 80


def _spec(**fields: Any) -> CanarySpec:
    return CanarySpec.model_validate(
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}, **fields}
    )


def test_spec_defaults() -> None:
    assert _spec().progress_deadline == 600
    assert _spec(progressDeadlineSeconds=60).progress_deadline == 60
    assert _spec().analysis_skipped is True
    assert _spec(analysis={"interval": "1m"}).analysis_skipped is False
    assert _spec(analysis={"interval": "1m"}, skipAnalysis=True).analysis_skipped is True
    assert _spec(analysis={"interval": "1m"}, skipAnalysis=False).analysis_skipped is False


def test_service_defaults() -> None:
    service = Service(port=9898)
    assert service.name_or("podinfo") == "podinfo"
    assert Service(port=80, name="web").name_or("podinfo") == "web"
    assert service.port_name_value == "http"
    assert service.target_port_value == 9898
    assert Service(port=80, target_port="http").target_port_value == "http"
    assert Service(port=80, target_port=8080).target_port_value == 8080
    assert _spec().service_name == "podinfo"
    assert _spec(service={"port": 80, "name": "apex"}).service_name == "apex"


def test_int_or_string_target_port_keeps_its_type() -> None:
    assert Service.model_validate({"port": 80, "targetPort": 8080}).target_port == 8080
    assert Service.model_validate({"port": 80, "targetPort": "http"}).target_port == "http"


def test_webhook_alert_and_affinity_defaults() -> None:
    hook = Webhook(name="a", url="http://x")
    assert hook.type_value == "rollout"
    assert Webhook(name="a", url="http://x", type="").type_value == "rollout"
    assert hook.timeout_seconds == 10.0
    assert Webhook(name="a", url="http://x", timeout="1m30s").timeout_seconds == 90.0
    spec = Canary.from_obj(BY_NAME["canary-progressive"]).spec
    assert spec.analysis is not None
    alerts = {a.name: a for a in spec.analysis.alerts or []}
    assert alerts["on-call"].severity_value == "error"
    assert alerts["dev-team"].provider_ref.namespace is None
    assert [w.name for w in spec.analysis.webhooks_of("rollout")] == ["load-test"]
    assert [w.name for w in spec.analysis.webhooks_of("pre-rollout")] == ["acceptance-test"]
    assert SessionAffinity(cookie_name="c").max_age_value == 86400
    assert SessionAffinity(cookie_name="c", max_age=60).max_age_value == 60
    assert ParentRef(name="gw").group_value == "gateway.networking.k8s.io"
    assert ParentRef(name="gw").kind_value == "Gateway"


def test_alert_provider_defaults_and_our_types() -> None:
    spec = AlertProviderSpec(type="slack", address="https://hooks.slack.com/x")
    assert (spec.channel_value, spec.username_value) == ("general", "canary-operator")
    for kind in ("googlechat", "generic", "gchat", "discord", "rocket", "msteams"):
        AlertProviderSpec.model_validate({"type": kind, "address": "https://example.com/hook"})


# ---- validation mirrors the CRD -------------------------------------------------------------


@pytest.mark.parametrize(
    "analysis",
    [
        {"stepWeight": 101},
        {"maxWeight": -1},
        {"stepWeights": [10, 200]},
        {"stepWeightPromotion": 150},
        {"mirrorWeight": 101},
        {"primaryReadyThreshold": 101},
        {"threshold": -1},
        {"iterations": -2},
        {"interval": "1 minute"},
        {"interval": "60"},
        {"metrics": [{"name": "m", "interval": "1d"}]},
        {"webhooks": [{"name": "w", "url": "http://x", "type": "pre"}]},
        {"webhooks": [{"name": "w", "url": "http://x", "timeout": "10"}]},
        {"webhooks": [{"name": "w"}]},
        {"alerts": [{"name": "a", "providerRef": {"name": "p"}, "severity": "critical"}]},
        {"alerts": [{"name": "a"}]},
        {"sessionAffinity": {"cookieName": "c", "sameSite": "Sometimes"}},
        {"sessionAffinity": {"maxAge": 10}},
        {"match": [{"headers": {"x": {"exact": "a", "regex": "b"}}}]},
    ],
)
def test_invalid_analysis_is_rejected(analysis: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Analysis.model_validate(analysis)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "a"}},
        {"targetRef": {"kind": "Deployment", "name": "a"}},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "provider": "gatewayapi"},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "service": {"name": "x"}},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "service": {"port": 80, "timeout": "x"}},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "service": {"port": 80, "trafficDistribution": "Nearby"}},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "service": {"port": 80, "gatewayRefs": [{}]}},
        {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"}, "autoscalerRef": {"apiVersion": "v1", "kind": "VPA", "name": "a"}},
    ],
)
def test_invalid_spec_is_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CanarySpec.model_validate(spec)


def test_invalid_templates_and_providers_are_rejected() -> None:
    with pytest.raises(ValidationError):
        MetricTemplate.model_validate({"spec": {"provider": {"type": "graphana"}, "query": "up"}})
    with pytest.raises(ValidationError):
        MetricTemplate.model_validate({"spec": {"provider": {"type": "prometheus"}}})
    with pytest.raises(ValidationError):
        AlertProviderSpec.model_validate({"type": "pager", "address": "https://x"})
    with pytest.raises(ValidationError, match="address or secretRef"):
        AlertProviderSpec.model_validate({"type": "slack"})


def test_string_match_takes_one_operator() -> None:
    assert StringMatch(regex="^a").dump() == {"regex": "^a"}
    assert StringMatch().dump() == {}
    with pytest.raises(ValidationError):
        StringMatch(exact="a", prefix="b")


# ---- status ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 26, 7, 20, tzinfo=timezone.utc)


def test_status_defaults() -> None:
    status = CanaryStatus()
    assert (status.phase, status.failed_checks, status.canary_weight, status.iterations) == (Phase.BLANK, 0, 0, 0)
    assert status.conditions == []
    assert status.last_failure is None and status.last_step_time is None


def test_status_timestamps_are_rfc3339_utc_z() -> None:
    status = CanaryStatus(phase=Phase.PROGRESSING, last_transition_time=T0, last_step_time=T0 + timedelta(milliseconds=250))
    body = status.to_patch()
    assert body["lastTransitionTime"] == "2026-11-26T07:20:00Z"
    assert body["lastStepTime"] == "2026-11-26T07:20:00.25Z"
    assert body["phase"] == "Progressing"
    again = CanaryStatus.model_validate(body)
    assert again.last_transition_time == T0
    assert again.last_transition_time.tzinfo is not None
    assert again.last_step_time == T0 + timedelta(milliseconds=250)


def test_status_timestamps_are_normalised_to_utc() -> None:
    status = CanaryStatus.model_validate({"lastTransitionTime": "2026-11-26T08:20:00+01:00", "waitingSince": "2026-11-26T07:20:00"})
    assert status.last_transition_time == T0
    assert status.waiting_since == T0
    assert status.to_patch()["lastTransitionTime"] == "2026-11-26T07:20:00Z"
    assert status.to_patch()["waitingSince"] == "2026-11-26T07:20:00Z"


def test_status_to_patch() -> None:
    status = CanaryStatus(
        phase=Phase.FAILED,
        failed_checks=3,
        canary_weight=0,
        tracked_configs={"configmap/podinfo-config": "0123456789abcdef"},
        last_applied_spec="85d557f47b",
        conditions=[
            Condition(type="Promoted", status="False", reason="Failed", message="Canary analysis failed", last_update_time=T0, last_transition_time=T0)
        ],
        last_failure=LastFailure(time=T0, check="request-success-rate", value=97.5, message="below 99"),
        observed_generation=4,
    )
    body = status.to_patch()
    assert body["failedChecks"] == 3
    assert body["trackedConfigs"] == {"configmap/podinfo-config": "0123456789abcdef"}
    assert body["conditions"] == [
        {
            "type": "Promoted",
            "status": "False",
            "reason": "Failed",
            "message": "Canary analysis failed",
            "lastUpdateTime": "2026-11-26T07:20:00Z",
            "lastTransitionTime": "2026-11-26T07:20:00Z",
        }
    ]
    assert body["lastFailure"] == {"time": "2026-11-26T07:20:00Z", "check": "request-success-rate", "value": 97.5, "message": "below 99"}
    assert body["observedGeneration"] == 4
    # None fields are explicit nulls so that a merge patch clears them
    assert body["lastPromotedSpec"] is None and body["waitingSince"] is None
    assert set(body) == {f.alias for f in CanaryStatus.model_fields.values()}
    assert CanaryStatus.model_validate(body) == status
    assert status.condition("Promoted") is not None and status.condition("Ready") is None


def test_flagger_status_parses() -> None:
    flagger_status = {
        "phase": "Succeeded",
        "canaryWeight": 0,
        "failedChecks": 0,
        "iterations": 0,
        "lastAppliedSpec": "5d8f9b7c6",
        "lastPromotedSpec": "5d8f9b7c6",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "trackedConfigs": {"secret/db": "aabbccddeeff0011"},
        "conditions": [
            {
                "type": "Promoted",
                "status": "True",
                "reason": "Succeeded",
                "message": "Canary analysis completed successfully, promotion finished.",
                "lastUpdateTime": "2026-01-02T03:04:05Z",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
    }
    doc = {**BY_NAME["canary-progressive"], "status": flagger_status}
    canary = Canary.from_obj(doc)
    assert canary.status is not None and canary.status.phase is Phase.SUCCEEDED
    assert canary.dump() == doc
    assert canary.name == "podinfo" and canary.namespace == "test"


# ---- property: any valid analysis round-trips ---------------------------------------------------

_names = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_text = st.text(max_size=20)
_durations = st.integers(min_value=0, max_value=600_000).map(lambda ms: format_duration(ms / 1000))
_weights = st.integers(min_value=0, max_value=100)
_positive_weights = st.integers(min_value=1, max_value=100)
_variables = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), _text, max_size=3)
_urls = st.from_regex(r"https?://[a-z]{1,8}(:[0-9]{2,4})?(/[a-z0-9]{0,5})?", fullmatch=True)
_counts = st.integers(min_value=0, max_value=1000)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_labels = st.dictionaries(_names, _text, max_size=3)
_string_match = st.sampled_from(["exact", "prefix", "suffix", "regex"]).flatmap(
    lambda key: st.fixed_dictionaries({key: _text})
)
_match = st.fixed_dictionaries(
    {},
    optional={
        "headers": st.dictionaries(_names, _string_match, max_size=2),
        "queryParams": st.dictionaries(_names, _string_match, max_size=2),
        "uri": _string_match,
        "sourceLabels": _labels,
        "ignoreUriCase": st.booleans(),
    },
)
_ref = st.fixed_dictionaries({"name": _names}, optional={"namespace": _names})
_metric = st.fixed_dictionaries(
    {"name": _names},
    optional={
        "interval": _durations,
        "threshold": _floats,
        "thresholdRange": st.fixed_dictionaries({}, optional={"min": _floats, "max": _floats}).filter(
            lambda r: r.get("min", 0) <= r.get("max", r.get("min", 0))),
        "query": _text,
        "templateRef": _ref,
        "templateVariables": _variables,
    },
)
_webhook = st.fixed_dictionaries(
    {"name": _names, "url": _urls},
    optional={
        "type": st.sampled_from(["", "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "event", "rollback", "confirm-traffic-increase"]),
        "timeout": _durations,
        "retries": st.integers(min_value=0, max_value=10),
        "disableTLS": st.booleans(),
        "muteAlert": st.booleans(),
        "metadata": _labels,
    },
)
_alert = st.fixed_dictionaries(
    {"name": _names, "providerRef": _ref}, optional={"severity": st.sampled_from(["", "info", "warn", "error"])}
)
_affinity = st.fixed_dictionaries(
    {"cookieName": _names},
    optional={
        "primaryCookieName": _names,
        "domain": _names,
        "httpOnly": st.booleans(),
        "maxAge": _counts,
        "partitioned": st.booleans(),
        "path": _names.map(lambda n: "/" + n),
        "sameSite": st.sampled_from(["Strict", "Lax", "None"]),
        "secure": st.booleans(),
    },
)
ANALYSES = st.fixed_dictionaries(
    {},
    optional={
        "interval": _durations,
        "threshold": _counts,
        "maxWeight": _positive_weights,
        "stepWeight": _positive_weights,
        "stepWeights": st.lists(_positive_weights, max_size=6, unique=True).map(sorted),
        "stepWeightPromotion": _positive_weights,
        "iterations": _counts,
        "match": st.lists(_match, max_size=3),
        "mirror": st.booleans(),
        "mirrorWeight": _weights,
        "primaryReadyThreshold": _weights,
        "canaryReadyThreshold": _positive_weights,
        "sessionAffinity": _affinity,
        "metrics": st.lists(_metric, max_size=3, unique_by=lambda m: m["name"]),
        "webhooks": st.lists(_webhook, max_size=3, unique_by=lambda w: w["name"]),
        "alerts": st.lists(_alert, max_size=2, unique_by=lambda a: a["name"]),
    },
).filter(lambda a: not a.get("match") or a.get("iterations"))


@settings(max_examples=200)
@given(ANALYSES)
def test_analysis_round_trip_and_helpers(doc: dict[str, Any]) -> None:
    analysis = Analysis.model_validate(doc)
    assert analysis.dump() == doc
    assert Analysis.model_validate(analysis.dump()) == analysis
    assert analysis.interval_seconds >= 1.0
    assert analysis.threshold_value >= 1
    assert 0 <= analysis.max_weight_value <= 100
    iterations = doc.get("iterations", 0)
    expected = "canary" if iterations == 0 else ("ab" if doc.get("match") else "bluegreen")
    assert analysis.strategy == expected


def test_status_assignment_is_validated() -> None:
    status = CanaryStatus()
    status.phase = "Progressing"  # type: ignore[assignment]
    assert status.phase is Phase.PROGRESSING
    status.last_step_time = datetime(2026, 11, 26, 7, 20)
    assert status.last_step_time == T0
    with pytest.raises(ValidationError):
        status.canary_weight = 101
    with pytest.raises(ValidationError):
        status.phase = "Paused"  # type: ignore[assignment]


# ---- impossible or hostile specs are refused (issue 10) ----------------------------------------


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"stepWeights": [0, 0]}, "greater than or equal to 1"),
        ({"stepWeights": [10, 10]}, "strictly increasing"),
        ({"stepWeights": [20, 10, 50]}, "strictly increasing"),
        ({"maxWeight": 0, "stepWeight": 10}, "greater than or equal to 1"),
        ({"metrics": [{"name": "m", "thresholdRange": {"min": 10, "max": 1}}]}, "greater than max"),
        ({"metrics": [{"name": "m"}, {"name": "m"}]}, "metric name 'm' is used twice"),
        ({"webhooks": [{"name": "w", "url": "http://a"}, {"name": "w", "url": "http://b"}]}, "used twice"),
        ({"canaryReadyThreshold": 0}, "greater than or equal to 1"),
        ({"iterations": 10**9}, "less than or equal to 1000"),
        ({"match": [{"headers": {"x": {"exact": "1"}}}], "stepWeight": 10}, "needs iterations"),
        ({"sessionAffinity": {"cookieName": "c;Domain=evil.example"}}, "should match pattern"),
        ({"sessionAffinity": {"cookieName": "c", "primaryCookieName": "p=1"}}, "should match pattern"),
        ({"sessionAffinity": {"cookieName": "c", "path": "/; Secure"}}, "should match pattern"),
        ({"sessionAffinity": {"cookieName": "c", "domain": "a;b"}}, "should match pattern"),
        ({"interval": "9999999999999h"}, "should match pattern"),
        ({"interval": "25h"}, "longer than the maximum of 24h"),
        ({"webhooks": [{"name": "w", "url": "http://a", "timeout": "1000h"}]}, "longer than the maximum of 10m"),
        ({"webhooks": [{"name": "w", "url": "http://a", "retries": 10**9}]}, "less than or equal to 10"),
        ({"webhooks": [{"name": "w", "url": "gopher://a"}]}, "should match pattern"),
        ({"webhooks": [{"name": "w\x1b]52;c;ZXZpbA==\x07", "url": "http://a"}]}, "should match pattern"),
        ({"metrics": [{"name": "m", "templateRef": {"name": "../x"}}]}, "should match pattern"),
        ({"metrics": [{"name": "m", "templateRef": {"name": "t", "namespace": "a/b"}}]}, "should match pattern"),
        ({"metrics": [{"name": "m", "templateVariables": {"a b": "x"}}]}, "may only hold letters"),
        ({"alerts": [{"name": "a", "providerRef": {"name": "p/../../x"}}]}, "should match pattern"),
        ({"metrics": [{"name": f"m{i}"} for i in range(33)]}, "at most 32"),
    ],
)
def test_impossible_or_hostile_analysis_is_refused(analysis: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Analysis.model_validate(analysis)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "../../kube-system/x"}},
         "should match pattern"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t" * 56}, "service": {"port": 80}},
         "set service.name"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a.b"}, "service": {"port": 80}},
         "set service.name"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
          "service": {"port": 80, "name": "s" * 56}}, "at most 55"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
          "service": {"port": 80, "name": "kube-dns/../x"}}, "should match pattern"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
          "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": ".."}},
         "should match pattern"),
        ({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
          "metricsServer": "http://user:pw@prometheus\x1b[2J"}, "should match pattern"),
    ],
)
def test_hostile_names_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        CanarySpec.model_validate(spec)


def test_a_service_name_of_55_fits_and_a_long_canary_name_is_refused() -> None:
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t" * 200},
            "service": {"port": 80, "name": "s" * 55}}
    assert CanarySpec.model_validate(spec).service_name == "s" * 55
    with pytest.raises(ValidationError, match="Event names"):
        Canary.from_obj({"metadata": {"name": "c" * 237, "namespace": "a"}, "spec": spec})
    assert Canary.from_obj({"metadata": {"name": "c" * 236, "namespace": "a"}, "spec": spec})


def test_secret_refs_are_object_names() -> None:
    for bad in ("..", "a/b", "../../kube-system/secrets/token", "A", ""):
        with pytest.raises(ValidationError):
            AlertProvider.from_obj({"spec": {"type": "slack", "secretRef": {"name": bad}}})
        with pytest.raises(ValidationError):
            MetricTemplate.from_obj({"spec": {"provider": {"type": "prometheus", "secretRef": {"name": bad}},
                                              "query": "up"}})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z0-9.%/-]{1,20}", fullmatch=True)),
       st.sampled_from(["targetRef", "autoscalerRef", "service", "templateRef",
                                               "providerRef", "secretRef"]))
def test_no_name_the_models_accept_leaves_its_namespace(name: str, field: str) -> None:
    """Whatever name the models let through is a single path segment of the Canary's namespace."""
    from urllib.parse import unquote

    import httpx

    from canary.adapters.kube import _path, check_segment

    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}
    try:
        if field == "targetRef":
            CanarySpec.model_validate({"targetRef": {**target, "name": name}})
        elif field == "autoscalerRef":
            CanarySpec.model_validate({"targetRef": target, "autoscalerRef": {
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": name}})
        elif field == "service":
            CanarySpec.model_validate({"targetRef": target, "service": {"port": 80, "name": name}})
        elif field == "templateRef":
            Analysis.model_validate({"metrics": [{"name": "m", "templateRef": {"name": name}}]})
        elif field == "providerRef":
            Analysis.model_validate({"alerts": [{"name": "a", "providerRef": {"name": "p", "namespace": name}}]})
        else:
            AlertProvider.from_obj({"spec": {"type": "slack", "secretRef": {"name": name}}})
    except ValidationError:
        return
    assert check_segment(name) == name
    prefix = "/api/v1/namespaces/team-a/secrets/"
    path = httpx.URL("https://api.invalid" + _path("v1", "secrets", "team-a", name)).raw_path.decode()
    assert path.startswith(prefix) and unquote(path[len(prefix):]) == name and "/" not in path[len(prefix):]


def _apply_merge_patch(doc, patch):
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _apply_merge_patch(out.get(key), value)
    return out


def test_status_patch_over_the_stored_status_clears_what_the_new_status_dropped() -> None:
    stored = {"phase": "Progressing", "canaryWeight": 0, "trackedConfigs": {"configmap/a": "1", "configmap/b": "2"},
              "intent": {"routes": {"primary": 100, "canary": 0, "mirror": True}, "targetUp": True},
              "someFutureField": {"x": 1}}
    new = CanaryStatus.model_validate({"phase": "Progressing", "canaryWeight": 100,
                                       "trackedConfigs": {"configmap/a": "1"},
                                       "intent": {"routes": {"primary": 0, "canary": 100}}})
    result = _apply_merge_patch(stored, new.to_patch(stored))
    assert result["intent"] == {"routes": {"primary": 0, "canary": 100}}
    assert result["trackedConfigs"] == {"configmap/a": "1"}
    assert "someFutureField" not in result
    assert CanaryStatus.model_validate(result) == new
    # without the stored status the old behaviour (nested keys kept) is what a merge gives
    assert _apply_merge_patch(stored, new.to_patch())["intent"]["routes"].get("mirror") is True
