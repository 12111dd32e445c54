"""Rendering of Flagger metric queries (pure, no I/O).

Flagger renders MetricTemplate queries (and its built-in PromQL) with Go's `text/template`
and `missingkey=error`. The variables are niladic *functions*, so a query reads
``{{ namespace }}``, not ``{{ .namespace }}``:

==================  =====================================================================
``{{ name }}``       the Canary's name
``{{ namespace }}``  the Canary's namespace
``{{ target }}``     ``spec.targetRef.name``
``{{ service }}``    ``spec.service.name``, else the target name
``{{ ingress }}``    ``spec.ingressRef.name``, else the target name
``{{ route }}``      ``spec.routeRef.name``, else the target name
``{{ interval }}``   ``metrics[].interval`` (we default it to ``1m``, see ``DEFAULT_INTERVAL``)
``{{ variables.K }}`` ``metrics[].templateVariables[K]``
==================  =====================================================================

This module implements the subset of Go template syntax that these queries need, and
rejects everything else with a :class:`TemplateError` that names the construct, so that a
query that renders here also renders in Flagger:

* actions with any whitespace inside the braces (``{{name}}``, ``{{  name  }}``);
* Go's trim markers ``{{- x }}`` / ``{{ x -}}`` (they remove the adjacent whitespace);
* comments ``{{/* ... */}}``;
* ``{{ variables.KEY }}`` and ``{{ index variables "KEY" }}`` (for keys that are not
  identifiers, e.g. containing ``-``).

A missing variable key, an unknown function, ``.field`` / ``$var`` references, pipelines,
``if``/``range`` and an unclosed ``{{`` raise :class:`TemplateError`.

``{{ variables.K }}`` values come from the Canary, so from whoever may edit it, and are escaped
for where they land in the PromQL (Flagger pastes them raw): inside ``"..."`` or ``'...'`` as
a string literal's content (quotes, backslashes and control characters escaped), inside a raw
```...``` string refused if they hold a backtick, inside a ``#`` comment without line breaks,
and anywhere else (a range, a number, a metric name) only when made of letters, digits, ``_``,
``.`` and ``:``. A value can therefore never end a string, add a matcher or rewrite the query.

``collapse_whitespace`` reproduces what Flagger's Prometheus client does to a query before
sending it: every run of whitespace becomes a single space (we also strip both ends).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_INTERVAL",
    "FUNCTIONS",
    "TemplateContext",
    "TemplateError",
    "collapse_whitespace",
    "context_for",
    "render",
    "render_query",
]

#: Window used for ``{{ interval }}`` when ``metrics[].interval`` is empty. Flagger applies
#: this default to its built-in metrics only; a MetricTemplate metric without an interval
#: renders ``{{ interval }}`` as "" there (which yields invalid PromQL such as ``[]``). We use
#: the same default for every kind of metric.
DEFAULT_INTERVAL = "1m"

#: The niladic template functions, in the order the docs list them.
FUNCTIONS = ("name", "namespace", "target", "service", "ingress", "route", "interval", "variables")


class TemplateError(ValueError):
    """A query template cannot be rendered (unknown name, missing key, unsupported syntax)."""


@dataclass(frozen=True)
class TemplateContext:
    """The values a query template may reference."""

    name: str = ""
    namespace: str = ""
    target: str = ""
    service: str = ""
    ingress: str = ""
    route: str = ""
    interval: str = DEFAULT_INTERVAL
    variables: Mapping[str, str] = field(default_factory=dict)

    def function(self, fn: str) -> str:
        if fn == "variables":
            raise TemplateError(
                "{{ variables }} renders the whole map; use {{ variables.KEY }} "
                'or {{ index variables "KEY" }}'
            )
        if fn not in FUNCTIONS:
            raise TemplateError(
                f"unknown template function {fn!r}; available: " + ", ".join(FUNCTIONS)
            )
        return str(getattr(self, fn))

    def variable(self, key: str) -> str:
        if key not in self.variables:
            have = ", ".join(sorted(self.variables)) or "none"
            raise TemplateError(
                f"template variable {key!r} is not set in templateVariables (set: {have})"
            )
        return str(self.variables[key])


# ---- building the context from a Canary ----------------------------------------------


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _get(obj: Any, snake: str) -> Any:
    """Read a field from a pydantic model (snake_case attribute) or a plain dict (camelCase)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        camel = _camel(snake)
        return obj.get(camel, obj.get(snake))
    value = getattr(obj, snake, None)
    if value is None:
        value = getattr(obj, _camel(snake), None)
    return value


def _path(obj: Any, *names: str) -> Any:
    for name in names:
        obj = _get(obj, name)
        if obj is None:
            return None
    return obj


def context_for(canary: Any, metric: Any = None) -> TemplateContext:
    """Build the template context of `metric` (a ``metrics[]`` entry, or None) of `canary`.

    Both accept the pydantic models of ``canary.models`` or plain dicts as found in the
    Kubernetes object (camelCase keys).
    """
    target = _path(canary, "spec", "target_ref", "name") or ""
    variables = _get(metric, "template_variables") or {}
    return TemplateContext(
        name=_path(canary, "metadata", "name") or "",
        namespace=_path(canary, "metadata", "namespace") or "",
        target=target,
        service=_path(canary, "spec", "service", "name") or target,
        ingress=_path(canary, "spec", "ingress_ref", "name") or target,
        route=_path(canary, "spec", "route_ref", "name") or target,
        interval=_get(metric, "interval") or DEFAULT_INTERVAL,
        variables=dict(variables),
    )


# ---- rendering -----------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_FUNC_RE = re.compile(rf"({_IDENT})")
_VAR_RE = re.compile(rf"variables\.({_IDENT})")
_INDEX_RE = re.compile(r'index\s+variables\s+("(?:[^"\\]|\\.)*"|`[^`]*`)')
_WS = " \t\r\n"


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    # Go interpreted string; its common escapes are those of JSON.
    try:
        return str(json.loads(literal))
    except ValueError as exc:
        raise TemplateError(f"invalid string literal {literal} in query template") from exc


def _find_close(text: str, start: int) -> int:
    """Index of the ``}}`` that ends the action starting at `start` (quotes respected)."""
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "`":
            end = text.find("`", i + 1)
            i = n if end < 0 else end
        elif text.startswith("}}", i):
            return i
        i += 1
    return -1


# ---- PromQL context of a substitution ---------------------------------------------------------

_BARE_SAFE = re.compile(r"[A-Za-z0-9_.:]*")


def _scan(state: str | None, text: str) -> str | None:
    """The PromQL lexical state after `text`, starting in `state`: None (expression), a quote
    character ('"', "'", '`') inside a string, or "#" inside a comment."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if state is None:
            if ch in "\"'`#":
                state = ch
        elif state == "#":
            if ch == "\n":
                state = None
        elif state == "`":
            if ch == "`":
                state = None
        elif ch == "\\":
            i += 1  # an escaped character inside "..." or '...'
        elif ch == state:
            state = None
        i += 1
    return state


def _quoted(value: str, quote: str) -> str:
    out = []
    for ch in value:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            continue
        else:
            out.append(ch)
    return "".join(out)


def escape_for(value: str, state: str | None, key: str) -> str:
    """`value` made safe for the PromQL context `state` (see `_scan`); TemplateError if it cannot be."""
    if state in ('"', "'"):
        return _quoted(value, state)
    if state == "`":
        if "`" in value:
            raise TemplateError(f"templateVariables.{key} is used in a `raw string` and may not contain a backtick")
        return value
    if state == "#":
        return " ".join(value.split())
    if not _BARE_SAFE.fullmatch(value):
        raise TemplateError(
            f"templateVariables.{key} is used outside a quoted string in the query, so it may only hold "
            "letters, digits, '_', '.' and ':' (quote it in the template to pass any text)")
    return value


def _variable_key(action: str) -> str | None:
    body = action.strip(_WS)
    m = _VAR_RE.fullmatch(body)
    if m:
        return m.group(1)
    m = _INDEX_RE.fullmatch(body)
    return _unquote(m.group(1)) if m else None


def _evaluate(action: str, ctx: TemplateContext) -> str:
    body = action.strip(_WS)
    if not body:
        raise TemplateError("empty action {{ }} in query template")
    m = _VAR_RE.fullmatch(body)
    if m:
        return ctx.variable(m.group(1))
    m = _INDEX_RE.fullmatch(body)
    if m:
        return ctx.variable(_unquote(m.group(1)))
    m = _FUNC_RE.fullmatch(body)
    if m:
        return ctx.function(m.group(1))
    if body.startswith(".") or body.startswith("$"):
        m = re.match(_IDENT, body.lstrip(".$"))
        hint = m.group(0) if m else "name"
        raise TemplateError(
            f"unsupported template construct {{{{ {body} }}}}: Flagger variables are "
            f"functions, write {{{{ {hint} }}}} instead of {{{{ .{hint} }}}}"
        )
    raise TemplateError(
        f"unsupported template construct {{{{ {body} }}}}: only "
        + ", ".join(f"{{{{ {f} }}}}" for f in FUNCTIONS if f != "variables")
        + ', {{ variables.KEY }} and {{ index variables "KEY" }} are supported'
    )


def render(template: str, ctx: TemplateContext) -> str:
    """Render a Flagger query template. Raises TemplateError (missingkey=error semantics)."""
    out: list[str] = []
    pos = 0
    n = len(template)
    state: str | None = None  # PromQL lexical state of the template text so far
    while True:
        open_at = template.find("{{", pos)
        if open_at < 0:
            out.append(template[pos:])
            break
        text = template[pos:open_at]
        start = open_at + 2
        # "{{- " trims the whitespace before the action (the dash must be followed by a space).
        if template.startswith("-", start) and start + 1 < n and template[start + 1] in _WS:
            text = text.rstrip(_WS)
            start += 2
        out.append(text)
        state = _scan(state, text)
        close_at = _find_close(template, start)
        if close_at < 0:
            snippet = template[open_at : open_at + 40]
            raise TemplateError(f"unclosed action in query template at offset {open_at}: {snippet!r}")
        action = template[start:close_at]
        pos = close_at + 2
        # " -}}" trims the whitespace after the action.
        if action.endswith("-") and len(action) >= 2 and action[-2] in _WS:
            action = action[:-1]
            while pos < n and template[pos] in _WS:
                pos += 1
        stripped = action.strip(_WS)
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(f"unclosed comment in query template at offset {open_at}")
            continue
        value = _evaluate(action, ctx)
        key = _variable_key(action)
        out.append(escape_for(value, state, key) if key is not None else value)
    return "".join(out)


_GO_SPACE = re.compile(r"[ \t\n\f\r\v]+")


def collapse_whitespace(query: str) -> str:
    """Collapse every run of whitespace into one space, as Flagger does before querying."""
    return _GO_SPACE.sub(" ", query).strip()


def render_query(template: str, ctx: TemplateContext) -> str:
    """`render` followed by `collapse_whitespace`: the query exactly as it is sent."""
    return collapse_whitespace(render(template, ctx))
