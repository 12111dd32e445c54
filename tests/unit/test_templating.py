"""Rendering of Flagger's Go-template metric queries."""

from __future__ import annotations

import pytest

from canary.models import Canary, Metric
from canary.templating import (
    DEFAULT_INTERVAL,
    TemplateContext,
    TemplateError,
    collapse_whitespace,
    context_for,
    render,
    render_query,
)

CTX = TemplateContext(
    name="podinfo",
    namespace="test",
    target="podinfo-app",
    service="podinfo-svc",
    ingress="podinfo-ing",
    route="podinfo-route",
    interval="30s",
    variables={"reporter": "source", "with-dash": "x"},
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ name }}", "podinfo"),
        ("{{name}}", "podinfo"),
        ("{{   namespace\t}}", "test"),
        ("{{ target }}", "podinfo-app"),
        ("{{ service }}", "podinfo-svc"),
        ("{{ ingress }}", "podinfo-ing"),
        ("{{ route }}", "podinfo-route"),
        ("{{ interval }}", "30s"),
        ("{{ variables.reporter }}", "source"),
        ("{{variables.reporter}}", "source"),
        ('{{ index variables "with-dash" }}', "x"),
        ("a {{- name -}} b", "apodinfob"),
        ("a{{/* a comment */}}b", "ab"),
        ("no actions at all", "no actions at all"),
        ('x{a="{{ namespace }}"}[{{ interval }}]', 'x{a="test"}[30s]'),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{ variables.missing }}", "'missing'"),
        ('{{ index variables "nope" }}', "'nope'"),
        ("{{ foo }}", "'foo'"),
        ("{{ .name }}", "{{ name }}"),
        ("{{ $x }}", "unsupported"),
        ("{{ name | printf }}", "unsupported"),
        ('{{ printf "%s" name }}', "unsupported"),
        ("{{ if name }}x{{ end }}", "unsupported"),
        ("{{ variables }}", "variables.KEY"),
        ("{{ variables.a.b }}", "unsupported"),
        ("{{ }}", "empty"),
        ("rate(x[{{ interval ]", "unclosed"),
    ],
)
def test_render_errors_name_the_problem(template: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as err:
        render(template, CTX)
    assert fragment in str(err.value)


def test_missing_variable_lists_the_known_keys() -> None:
    with pytest.raises(TemplateError, match=r"reporter"):
        render("{{ variables.other }}", CTX)


def test_collapse_whitespace() -> None:
    assert collapse_whitespace("\n  sum(\n\trate(x[1m])\n  )  * 100\n") == "sum( rate(x[1m]) ) * 100"


def test_render_query_collapses() -> None:
    assert render_query("sum(\n  x{ns=\"{{ namespace }}\"}\n)", CTX) == 'sum( x{ns="test"} )'


def _canary(**spec: object) -> Canary:
    body = {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-app"},
            "service": {"port": 9898},
            **spec,
        },
    }
    return Canary.model_validate(body)


def test_context_from_models_falls_back_to_target() -> None:
    metric = Metric(name="m", template_variables={"reporter": "destination"})
    ctx = context_for(_canary(), metric)
    assert ctx == TemplateContext(
        name="podinfo",
        namespace="test",
        target="podinfo-app",
        service="podinfo-app",
        ingress="podinfo-app",
        route="podinfo-app",
        interval=DEFAULT_INTERVAL,
        variables={"reporter": "destination"},
    )


def test_context_uses_refs_and_interval() -> None:
    canary = _canary(
        service={"port": 80, "name": "front"},
        ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "ing"},
        routeRef={"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "rt"},
    )
    ctx = context_for(canary, Metric(name="m", interval="2m"))
    assert (ctx.service, ctx.ingress, ctx.route, ctx.interval) == ("front", "ing", "rt", "2m")


def test_context_from_plain_dicts() -> None:
    canary = {
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {"targetRef": {"name": "t"}, "service": {"name": "s"}},
    }
    ctx = context_for(canary, {"name": "m", "interval": "5m", "templateVariables": {"k": "v"}})
    assert ctx.name == "c" and ctx.namespace == "ns" and ctx.target == "t"
    assert ctx.service == "s" and ctx.interval == "5m" and ctx.variables == {"k": "v"}
    assert context_for(canary, None).interval == "1m"
