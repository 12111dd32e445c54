"""Text that reaches a chat room: escaping per markup, and the AlertProvider's message templates.

Everything shown in an alert is hostile: Canary names and messages come from tenants' specs,
failure reasons from remote answers. A tenant must not be able to put a link that reads
"Approve" but points elsewhere into another team's channel, nor ring terminals with control
characters. So:

* :func:`clean` drops escape sequences and control characters (but line breaks) from every text
  (:func:`canary.text.printable`);
* :func:`slack` escapes ``& < >`` as Slack asks (``<https://evil|Approve>`` is Slack's link
  syntax; escaped it shows as typed);
* :func:`markdown` also backslash-escapes the markdown that makes links and emphasis
  (``[Approve](https://evil)``) for Discord and Teams;
* :func:`html` escapes for receivers that read HTML (Google Chat, Teams' MessageCard).

Message templates (``spec.template``, ``spec.linkTemplate`` of an AlertProvider) are rendered
with the project's own Go-template subset (:func:`canary.templating.render`), with the release's
fields as niladic functions, as Flagger's query templates use them: ``{{ canary }} in
{{ namespace }} is {{ phase }}``. The fields are :data:`TEMPLATE_FIELDS`. A bad template raises
:class:`AlertTemplateError` naming the problem; the Notifier then sends the default message and
reports the error (an alert is never lost to a typo).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from canary.templating import TemplateError, render
from canary.text import printable

from .info import AlertInfo

__all__ = ["TEMPLATE_FIELDS", "AlertTemplateError", "clean", "html", "markdown", "render_link",
           "render_message", "slack", "template_values"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\`*_~\[\]()|#])")
MAX_TEXT = 3000  # Slack truncates a text at 3000 characters in a section; so do we, everywhere


def clean(text: object, limit: int = MAX_TEXT) -> str:
    """The text without escape sequences and control characters (line breaks kept, tabs made
    spaces: canary.text.printable), at most `limit` characters."""
    out = printable(str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def slack(text: object) -> str:
    """Slack's escaping of ``& < >`` (its only control characters in mrkdwn)."""
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown(text: object) -> str:
    """Slack's escaping plus a backslash before markdown that makes links or emphasis."""
    escaped = _MARKDOWN.sub(r"\\\1", clean(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html(text: object) -> str:
    return slack(text).replace('"', "&quot;")


# ---- templates ----------------------------------------------------------------------------

TEMPLATE_FIELDS = ("canary", "name", "namespace", "cluster", "severity", "message", "phase", "weight",
                   "images", "revision", "target", "check", "value", "reason", "link")


class AlertTemplateError(ValueError):
    """An AlertProvider's template cannot be rendered."""


def template_values(info: AlertInfo) -> dict[str, str]:
    """The fields a template may use, as text."""
    return {
        "canary": info.canary,
        "name": info.canary,
        "namespace": info.namespace,
        "cluster": info.cluster,
        "severity": info.severity,
        "message": info.message,
        "phase": info.phase,
        "weight": str(info.weight),
        "images": info.image or "",
        "revision": info.revision,
        "target": info.target,
        "check": info.check or "",
        "value": info.value_text,
        "reason": info.failure or "",
        "link": info.link or "",
    }


@dataclass(frozen=True)
class _Context:
    """What :func:`canary.templating.render` asks of a context: functions and variables."""

    values: Mapping[str, str]
    encode: Callable[[str], str] = str

    def function(self, fn: str) -> str:
        if fn not in self.values:
            raise TemplateError(f"unknown field {fn!r}; available: " + ", ".join(self.values))
        return self.encode(self.values[fn])

    def variable(self, key: str) -> str:
        raise TemplateError("alert templates have no variables; use the fields: " + ", ".join(self.values))


def _render(kind: str, template: str, values: Mapping[str, str], encode: Callable[[str], str] = str) -> str:
    try:
        return render(template, _Context(values, encode))  # type: ignore[arg-type]  # duck-typed context
    except TemplateError as exc:
        text = str(exc).replace("query template", "template")
        if "unsupported template construct" in text:  # the query module lists its own functions
            text = text.split(": only ")[0] + "; alert template fields: " + ", ".join(TEMPLATE_FIELDS)
        raise AlertTemplateError(f"{kind}: {text}") from None


def render_message(template: str, info: AlertInfo) -> str:
    """The alert's message from the provider's template (values as they are; providers escape)."""
    return clean(_render("template", template, template_values(info)))


def render_link(template: str, info: AlertInfo) -> str:
    """The provider's link: values percent-encoded, and only an http(s) address is accepted."""
    values = {k: v for k, v in template_values(info).items() if k not in ("link", "message", "reason")}
    url = _render("linkTemplate", template, values, lambda v: quote(v, safe=""))
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url) \
            or any(c in url for c in " <>|\"'`"):
        raise AlertTemplateError(f"linkTemplate: {clean(url, 120)!r} is not an http(s) URL")
    return url
