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


# ---- templateVariables cannot rewrite the query (issue 10) --------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from canary.templating import TemplateContext as _Ctx, TemplateError as _Err, render as _render  # noqa: E402


def _skeleton(query: str) -> str:
    """The query with the contents of its string literals removed (what PromQL executes)."""
    out, state, i = [], None, 0
    while i < len(query):
        ch = query[i]
        if state is None:
            out.append(ch)
            if ch in "\"'`":
                state = ch
        elif state != "`" and ch == "\\":
            i += 1
        elif ch == state:
            out.append(ch)
            state = None
        i += 1
    assert state is None, f"unterminated string in {query!r}"
    return "".join(out)


@pytest.mark.parametrize("template", [
    'sum(rate(http_requests_total{app="{{ variables.app }}"}[1m]))',
    "sum(rate(http_requests_total{app='{{ variables.app }}'}[1m]))",
    'sum(rate(http_requests_total{app=~"{{ index variables "app" }}.*"}[1m]))',
])
@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=30))
def test_a_quoted_variable_stays_inside_its_string(template: str, value: str) -> None:
    rendered = _render(template, _Ctx(variables={"app": value}))
    assert _skeleton(rendered) == _skeleton(_render(template, _Ctx(variables={"app": "x"})))


@pytest.mark.parametrize("value", ['x"} or vector(1) or {a="', "x'} or vector(1) #", "5m]) or vector(1) #",
                                   "1 > bool 0", "x\n) or vector(1)"])
def test_a_bare_variable_is_only_a_simple_token(value: str) -> None:
    with pytest.raises(_Err, match="outside a quoted string"):
        _render("rate(x[{{ variables.window }}])", _Ctx(variables={"window": value}))
    assert _render("rate(x[{{ variables.window }}])", _Ctx(variables={"window": "5m"})) == "rate(x[5m])"


def test_injection_attempts_are_escaped() -> None:
    ctx = _Ctx(variables={"app": 'podinfo"} or vector(1) or {x="'})
    assert _render('up{app="{{ variables.app }}"}', ctx) == r'up{app="podinfo\"} or vector(1) or {x=\""}'
    with pytest.raises(_Err, match="backtick"):
        _render("up{app=`{{ variables.app }}`}", _Ctx(variables={"app": "a`} or vector(1) or {a=`"}))
    assert _render("up # {{ variables.app }}", _Ctx(variables={"app": "a\nor vector(1)"})) == "up # a or vector(1)"
