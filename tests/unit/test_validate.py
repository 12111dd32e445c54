"""`canary validate`: everything the operator would refuse or ignore, with the field's path,
its line and a plain sentence; text, JSON and GitHub annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.test_cli import FakeApi, run

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "podinfo" / "canary.yaml"


def good() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def write(tmp_path: Path, *docs: dict, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def findings(tmp_path: Path, *docs: dict, extra: tuple[str, ...] = ()) -> tuple[int, list[dict]]:
    code, out, _ = run(FakeApi(), "validate", write(tmp_path, *docs), "-o", "json", *extra)
    return code, json.loads(out)["findings"]


def only(found: list[dict], severity: str = "error") -> list[tuple[str, str]]:
    return [(f["path"], f["message"]) for f in found if f["severity"] == severity]


def test_the_example_is_valid(tmp_path):
    code, out, _ = run(FakeApi(), "validate", str(EXAMPLE))
    assert code == 0 and f"{EXAMPLE}:1: Canary podinfo: ok" in out and "0 error(s), 0 warning(s)" in out


def test_flagger_api_version_says_which_to_use(tmp_path):
    doc = good()
    doc["apiVersion"] = "flagger.app/v1beta1"
    code, found = findings(tmp_path, doc)
    assert code == 1
    assert only(found) == [("apiVersion", "flagger.app/v1beta1 is Flagger's API; this operator watches "
                                          "canary.dev/v1beta1 (same fields): set apiVersion: canary.dev/v1beta1")]


def test_a_typo_is_a_warning_naming_the_field_and_its_line(tmp_path):
    doc = good()
    doc["spec"]["analysis"]["stepWeigth"] = doc["spec"]["analysis"].pop("stepWeight")
    path = write(tmp_path, doc)
    code, out, _ = run(FakeApi(), "validate", path)
    line = next(i for i, t in enumerate(Path(path).read_text().splitlines(), 1) if "stepWeigth" in t)
    assert f"{path}:{line}: warning: Canary podinfo: spec.analysis.stepWeigth: unknown field 'stepWeigth', ignored " \
           "by the operator; did you mean stepWeight?" in out
    # and without a step the analysis cannot move traffic: an error
    assert code == 1 and "needs stepWeight or stepWeights" in out
    doc = good()
    doc["spec"]["analysis"]["metrics"][0]["tresholdRange"] = {"min": 1}
    _, found = findings(tmp_path, doc)
    assert ("spec.analysis.metrics[0].tresholdRange", "unknown field 'tresholdRange', ignored by the operator; did "
            "you mean thresholdRange?") in only(found, "warning")


@pytest.mark.parametrize(("change", "path", "words"), [
    (lambda d: d["spec"].update(provider="linkerd"), "spec.provider", "does not implement"),
    (lambda d: d["spec"]["targetRef"].update(kind="DaemonSet"), "spec.targetRef.kind", "only Deployment"),
    (lambda d: d["spec"]["targetRef"].update(kind="StatefulSet"), "spec.targetRef.kind", "is not accepted"),
    (lambda d: d["spec"].update(provider="contour-ish"), "spec.provider", "is not accepted"),
    (lambda d: d["spec"]["analysis"]["metrics"].append({"name": "error-rate", "thresholdRange": {"max": 1}}),
     "spec.analysis.metrics[2].name", "neither builtin"),
    (lambda d: d["spec"]["analysis"].update(stepWeight=60), "spec.analysis.stepWeight", "more than maxWeight 50"),
    (lambda d: d["spec"]["analysis"].update(maxWeight=150), "spec.analysis.maxWeight", "less than or equal to 100"),
    (lambda d: d["spec"]["analysis"].update(stepWeights=[10, 50, 30]), "spec.analysis", "strictly increasing"),
    (lambda d: d["spec"]["analysis"]["metrics"][0].update(thresholdRange={"min": 5, "max": 1}),
     "spec.analysis.metrics[0].thresholdRange", "no value can pass"),
    (lambda d: d["spec"]["targetRef"].update(name="a" * 60), "spec", "not a valid Service name"),
    (lambda d: (d["spec"]["targetRef"].update(name="a" * 60), d["spec"]["service"].update(name="svc")),
     "spec.targetRef.name", "too long"),
    (lambda d: d["metadata"].update(name="a" * 240), "", "longer than"),
    (lambda d: d["spec"]["analysis"].update(interval="5 minutes"), "spec.analysis.interval", "match pattern"),
    (lambda d: d["spec"].update(autoscalerRef={"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                               "name": "x"}), "spec.autoscalerRef.kind", "only HorizontalPodAutoscaler"),
    (lambda d: d["spec"]["analysis"]["metrics"][0].update(templateRef={"name": "nowhere"}),
     "spec.analysis.metrics[0].templateRef", "MetricTemplate default/nowhere is not in the files given"),
    (lambda d: d["spec"]["analysis"].update(alerts=[{"name": "a", "providerRef": {"name": "slack"}}]),
     "spec.analysis.alerts[0].providerRef", "AlertProvider default/slack is not in the files given"),
])
def test_what_the_operator_would_refuse(tmp_path, change, path, words):
    doc = good()
    change(doc)
    code, found = findings(tmp_path, doc)
    errors = only(found)
    assert code == 1 and any(p == path and words in m for p, m in errors), errors


def test_ignored_fields_are_warnings(tmp_path):
    doc = good()
    doc["spec"]["analysis"].update(iterations=10)
    doc["spec"]["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "x"}
    code, found = findings(tmp_path, doc)
    warnings = only(found, "warning")
    assert code == 0 and not only(found)
    assert any(p == "spec.analysis.stepWeight" and "ignored with iterations (blue/green)" in m for p, m in warnings)
    assert any(p == "spec.ingressRef" and "ignored" in m for p, m in warnings)
    code, _, _ = run(FakeApi(), "validate", write(tmp_path, doc), "--strict")
    assert code == 1


def test_references_resolved_among_the_files_and_templates_validated(tmp_path):
    doc = good()
    doc["metadata"]["namespace"] = "shop"
    doc["spec"]["analysis"]["metrics"].append({"name": "errors", "templateRef": {"name": "errors"},
                                               "thresholdRange": {"max": 1}})
    doc["spec"]["analysis"]["alerts"] = [{"name": "oncall", "providerRef": {"name": "slack", "namespace": "ops"}}]
    template = {"apiVersion": "canary.dev/v1beta1", "kind": "MetricTemplate", "metadata": {"name": "errors",
                "namespace": "shop"}, "spec": {"provider": {"type": "prometheus"}, "query": "sum(x)"}}
    provider = {"apiVersion": "canary.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "slack",
                "namespace": "ops"}, "spec": {"type": "slack", "address": "https://hooks.example.com/x"}}
    code, found = findings(tmp_path, doc, template, provider)
    assert code == 0 and not only(found), found
    template["spec"]["provider"]["type"] = "datadog"
    del provider["spec"]["address"]
    code, found = findings(tmp_path, doc, template, provider)
    errors = only(found)
    assert code == 1
    assert ("spec.provider.type", "provider type datadog is not supported by this operator (only prometheus): every "
            "check using this template would fail") in errors
    assert any("an alert provider needs address or secretRef" in m for _, m in errors)


def test_no_canary_found(tmp_path):
    code, out, _ = run(FakeApi(), "validate", write(tmp_path, {"apiVersion": "v1", "kind": "ConfigMap"}))
    assert code == 1 and "no Canary found" in out
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code, out, _ = run(FakeApi(), "validate", str(empty), "-o", "github")
    assert code == 1 and out.strip().endswith(f"::error::no Canary found in {empty}")


def test_github_annotations(tmp_path):
    doc = good()
    doc["spec"]["provider"] = "nginx"
    path = write(tmp_path, doc)
    code, out, _ = run(FakeApi(), "validate", path, "-o", "github")
    line = next(i for i, t in enumerate(Path(path).read_text().splitlines(), 1) if "provider: nginx" in t)
    assert code == 1
    assert out.splitlines() == [f"::error file={path},line={line},title=Canary podinfo spec.provider::provider "
                                "'nginx' is a Flagger provider this operator does not implement: the Canary would "
                                "fail; use one of istio, gatewayapi%3Av1, gatewayapi%3Av1beta1".replace("%3A", ":")]


def test_a_directory_and_stdin(tmp_path, monkeypatch):
    import io

    (tmp_path / "d").mkdir()
    write(tmp_path / "d", good(), name="a.yaml")
    write(tmp_path / "d", good(), name="b.yml")
    code, out, _ = run(FakeApi(), "validate", str(tmp_path / "d"))
    assert code == 0 and out.count(": ok") == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    code, out, _ = run(FakeApi(), "validate", "-")
    assert code == 0 and "<stdin>:1: Canary podinfo: ok" in out


def test_a_compared_metric_can_fail_without_a_bound_and_advisory_says_what_it_sees(tmp_path):
    doc = good()
    doc["spec"]["analysis"]["metrics"] = [{"name": "request-duration", "interval": "1m", "compare": {"tolerance": 10}}]
    code, found = findings(tmp_path, doc)
    assert code == 0 and not only(found, "warning"), found
    doc["spec"]["analysis"]["advisory"] = True
    code, found = findings(tmp_path, doc)
    assert any(p == "spec.analysis.advisory" and "noData: fail" in m for p, m in only(found, "warning")), found
    doc["spec"]["analysis"]["metrics"][0]["noData"] = "hold"
    code, found = findings(tmp_path, doc)
    assert not only(found, "warning"), found
