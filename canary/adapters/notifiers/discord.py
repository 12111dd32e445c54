"""Discord: the Slack legacy attachment posted to Discord's Slack-compatible endpoint (``<url>/slack``),
which does not read Block Kit.

Discord also reads markdown (``[text](url)`` is a masked link), so text is escaped with
:func:`text.markdown` as well as Slack's ``& < >``.
"""

from __future__ import annotations

from . import slack, text
from .base import Request, Target, register
from .info import AlertInfo


def url(address: str) -> str:
    """The webhook URL with /slack appended (once)."""
    base = address.rstrip("/")
    return base if base.endswith("/slack") else base + "/slack"


@register("discord")
class Discord:
    type = "discord"

    def requests(self, target: Target, info: AlertInfo) -> list[Request]:
        body = slack.legacy(info, target.channel, target.username, escape=text.markdown)
        return [Request(url(target.address), body)]
