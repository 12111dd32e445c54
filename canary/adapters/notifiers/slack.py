"""Slack: Block Kit, with the severity as the colour bar beside a few dense facts.

The message (:func:`payload`)::

    {channel, username, icon_emoji, text: "<subject>: <message>"   # notifications, fallback
     blocks: [header "<subject>", section <message> (+ a "Details" button with a link)],
     attachments: [{color, fallback, blocks: [section fields (Cluster, Target, Status, Failed
                    check), section (Reason, Image), context (canary-operator · traffic · time)]}]}

The top-level blocks say what happened; the attachment (its colour bar: green, yellow, red)
holds the facts, two short ones per row. Slack shows the top-level ``text`` only in
notifications when blocks are present. Discord's and Rocket.Chat's Slack-compatible webhooks
do not read Block Kit: they get Flagger's legacy attachment (:func:`legacy`), with the same
dense fields.

Every text is escaped with :func:`text.slack` (``<https://evil|Approve>`` shows as typed, it
is not a link) and fitted to Block Kit's limits (header 150, section 3000, field 2000
characters, at most 10 fields) without cutting an escape in two: Slack refuses a whole
message whose blocks are too long. An optional Secret ``token`` is sent as a Bearer header
(chat.postMessage).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from canary.models import format_timestamp

from . import text
from .base import DEFAULT_USERNAME, Request, Target, bearer, register
from .info import AlertInfo

COLORS = {"info": "good", "warn": "warning", "error": "danger"}
HEADER_MAX, SECTION_MAX, FIELD_MAX, FIELDS_MAX, BUTTON_URL_MAX = 150, 3000, 2000, 10, 3000
ICON = ":rocket:"
LONG_FIELDS = ("Reason", "Image")  # a line each, below the two-column facts

_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,4}$")


def fit(escaped: str, limit: int) -> str:
    """An escaped text cut to `limit` characters, never inside an ``&lt;``."""
    if len(escaped) <= limit:
        return escaped
    return _PARTIAL_ENTITY.sub("", escaped[: limit - 1]) + "…"


def _mrkdwn(value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": value}


def _facts(info: AlertInfo) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """(two-column facts, one-line facts, the traffic note) from the dense fields."""
    short, long_, traffic = [], [], ""
    for title, value, _ in info.dense_fields():
        if title == "Traffic":
            traffic = value
        elif title in LONG_FIELDS:
            long_.append((title, value))
        else:
            short.append((title, value))
    return short, long_, traffic


def _date(info: AlertInfo) -> str:
    """Slack's date markup: shown in the reader's time zone, the UTC time as its fallback."""
    stamp = format_timestamp(info.timestamp)
    return f"<!date^{int(info.timestamp.timestamp())}^{{date_short_pretty}} {{time_secs}}|{stamp}>"


def blocks(info: AlertInfo, escape: Callable[[object], str] = text.slack) -> tuple[list[dict], list[dict]]:
    """(the message's blocks, the coloured attachment's blocks)."""
    head: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": fit(escape(info.subject), HEADER_MAX),
                                    "emoji": False}},
    ]
    message: dict[str, Any] = {"type": "section", "text": _mrkdwn(fit(escape(info.message), SECTION_MAX))}
    if info.link and len(info.link) <= BUTTON_URL_MAX:  # an http(s) URL (text.render_link)
        message["accessory"] = {"type": "button", "text": {"type": "plain_text", "text": "Details"},
                                "url": info.link}
    head.append(message)
    short, long_, traffic = _facts(info)
    facts: list[dict[str, Any]] = []
    if short:
        facts.append({"type": "section", "fields": [
            _mrkdwn(fit(f"*{title}*\n{escape(value)}", FIELD_MAX)) for title, value in short[:FIELDS_MAX]]})
    if long_:
        share = SECTION_MAX // len(long_) - 1  # each line its share: a long reason keeps the image
        lines = "\n".join(fit(f"*{title}*: {escape(value)}", share) for title, value in long_)
        facts.append({"type": "section", "text": _mrkdwn(fit(lines, SECTION_MAX))})
    context = [DEFAULT_USERNAME] + ([escape(traffic)] if traffic else []) + [_date(info)]
    facts.append({"type": "context", "elements": [_mrkdwn(fit(" · ".join(context), FIELD_MAX))]})
    return head, facts


def payload(info: AlertInfo, channel: str = "general", username: str = DEFAULT_USERNAME,
            colors: Mapping[str, str] = COLORS) -> dict[str, Any]:
    """The Block Kit message (see the module docstring)."""
    head, facts = blocks(info)
    fallback = fit(text.slack(f"{info.subject}: {info.message}"), SECTION_MAX)
    return {
        "channel": text.clean(channel, 80),
        "username": text.clean(username, 80),
        "icon_emoji": ICON,
        "text": fallback,
        "blocks": head,
        "attachments": [{"color": colors.get(info.severity, colors["info"]), "fallback": fallback,
                         "blocks": facts}],
    }


def legacy(info: AlertInfo, channel: str = "general", username: str = DEFAULT_USERNAME,
           colors: Mapping[str, str] = COLORS, escape: Callable[[object], str] = text.slack) -> dict[str, Any]:
    """Flagger's shape, one legacy attachment, for Slack-compatible receivers without Block Kit
    (Discord, Rocket.Chat): ``{channel, username, icon_emoji, attachments: [{color,
    author_name, text, mrkdwn_in, fields, fallback}]}`` with the dense fields."""
    attachment: dict[str, Any] = {
        "color": colors.get(info.severity, colors["info"]),
        "author_name": escape(info.subject),
        "text": escape(info.message),
        "mrkdwn_in": ["text"],
        "fields": [{"title": k, "value": escape(v), "short": short} for k, v, short in info.dense_fields()],
        "fallback": escape(f"{info.subject}: {info.message}"),
    }
    if info.link:
        attachment["title"] = "Details"
        attachment["title_link"] = info.link
    return {
        "channel": text.clean(channel, 80),
        "username": text.clean(username, 80),
        "icon_emoji": ICON,
        "attachments": [attachment],
    }


@register("slack")
class Slack:
    type = "slack"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, payload(info, target.channel, target.username), bearer(target))]
