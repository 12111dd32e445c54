"""Google Chat: a card with a header and one textParagraph per fact (HTML, escaped)."""

from __future__ import annotations

from typing import Any

from . import text
from .base import Request, Target, register
from .info import AlertInfo

DEFAULT_TITLE = "canary-operator"


def payload(info: AlertInfo, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    h = text.html
    widgets: list[dict[str, Any]] = [{"textParagraph": {"text": h(info.message)}}]
    widgets += [{"textParagraph": {"text": f"<b>{h(k)}</b>: {h(v)}"}} for k, v in info.fields()]
    if info.link:
        widgets.append({"buttons": [{"textButton": {"text": "DETAILS", "onClick": {"openLink": {"url": info.link}}}}]})
    return {"cards": [{"header": {"title": title, "subtitle": text.clean(info.subject)},
                       "sections": [{"widgets": widgets}]}]}


@register("gchat", "googlechat")
class GoogleChat:
    type = "gchat"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, payload(info))]
