"""Alerts: the engine's ``Alert(severity, message)`` sent to chat rooms, incident tools and webhooks.

The shape of Flagger's ``pkg/notifier``: one module per provider behind one small interface
(:class:`~.base.Provider`: ``requests(target, info)``) and a factory keyed by the
AlertProvider's ``spec.type`` (:func:`~.base.provider_for`).

* :mod:`.info` -- what an alert says (:class:`AlertInfo`, :func:`describe`), pure;
* :mod:`.text` -- escaping per markup and the AlertProvider's message templates, pure;
* one module per provider, pure: :mod:`.slack`, :mod:`.discord`, :mod:`.rocket`, :mod:`.msteams`
  (MessageCard and Workflows), :mod:`.gchat`, :mod:`.generic`, :mod:`.alertmanager`,
  :mod:`.pagerduty`, :mod:`.opsgenie`;
* :mod:`.notifier` -- :class:`Notifier`: routing by severity, resolving providers and their
  Secrets, sending (the only module with I/O).
"""

from __future__ import annotations

from . import alertmanager, discord, gchat, generic, msteams, opsgenie, pagerduty, rocket, slack  # noqa: F401 (registers)
from .base import Provider, Request, Target, build_request, provider_for, types
from .info import SEVERITY_RANK, AlertInfo, describe, images_of, routes_to, traffic_routing
from .notifier import Delivery, Notifier
from .text import AlertTemplateError, render_link, render_message

discord_url = discord.url
slack_payload = slack.payload
slack_legacy_payload = slack.legacy
msteams_payload = msteams.message_card
msteams_workflows_payload = msteams.adaptive_card
gchat_payload = gchat.payload
generic_payload = generic.payload


def rocket_payload(info: AlertInfo, channel: str = "general", username: str = "canary-operator") -> dict:
    return slack.legacy(info, channel, username, colors=rocket.COLORS)


__all__ = [
    "SEVERITY_RANK", "AlertInfo", "AlertTemplateError", "Delivery", "Notifier", "Provider", "Request", "Target",
    "build_request", "describe", "discord_url", "gchat_payload", "generic_payload", "images_of",
    "msteams_payload", "msteams_workflows_payload", "provider_for", "render_link", "render_message",
    "rocket_payload", "routes_to", "slack_legacy_payload", "slack_payload", "traffic_routing", "types",
]
