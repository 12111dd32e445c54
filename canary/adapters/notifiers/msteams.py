"""Microsoft Teams: Workflows (Adaptive Cards) and the legacy Office 365 connector MessageCard.

``type: msteams`` posts Flagger's MessageCard, which the retired Office 365 connectors read;
``type: msteams-workflows`` posts the message a Teams Workflows ("Post to a channel when a
webhook request is received") expects: ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}``.

MessageCard text is read as HTML and markdown, Adaptive Card text as markdown: both escape
``& < >`` and the markdown that makes links (:func:`text.markdown`), so a tenant cannot put
``[Approve](https://evil)`` into another team's channel. The link of ``linkTemplate`` is a
button (``potentialAction`` / ``Action.OpenUrl``), never text.
"""

from __future__ import annotations

from typing import Any

from . import text
from .base import Request, Target, register
from .info import AlertInfo

HEX = {"info": "0076D7", "warn": "FFA500", "error": "FF0000"}
CARD_COLORS = {"info": "Accent", "warn": "Warning", "error": "Attention"}
md = text.markdown


def message_card(info: AlertInfo) -> dict[str, Any]:
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": HEX.get(info.severity, HEX["info"]),
        "summary": md(f"{info.subject}: {info.message}"[:200]),
        "sections": [
            {
                "activityTitle": md(info.message),
                "activitySubtitle": md(info.subject),
                "facts": [{"name": k, "value": md(v)} for k, v in info.fields()],
            }
        ],
    }
    if info.link:
        card["potentialAction"] = [{"@type": "OpenUri", "name": "Details",
                                    "targets": [{"os": "default", "uri": info.link}]}]
    return card


def adaptive_card(info: AlertInfo) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": md(info.subject), "weight": "Bolder", "size": "Medium",
             "color": CARD_COLORS.get(info.severity, "Default"), "wrap": True},
            {"type": "TextBlock", "text": md(info.message), "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": md(v)} for k, v in info.fields()]},
        ],
    }
    if info.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Details", "url": info.link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


@register("msteams")
class MessageCard:
    type = "msteams"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, message_card(info))]


@register("msteams-workflows")
class Workflows:
    type = "msteams-workflows"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, adaptive_card(info))]
