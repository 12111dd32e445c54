"""Rocket.Chat: the Slack legacy attachment (its incoming webhooks do not read Block Kit) with hex colours."""

from __future__ import annotations

from . import slack
from .base import Request, Target, register
from .info import AlertInfo

COLORS = {"info": "#0076D7", "warn": "#FFA500", "error": "#FF0000"}


@register("rocket")
class Rocket:
    type = "rocket"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        return [Request(target.address, slack.legacy(info, target.channel, target.username, colors=COLORS))]
