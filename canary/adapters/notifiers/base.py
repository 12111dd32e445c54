"""The seam between the Notifier and the providers: one small interface and a factory by type.

A provider is an object with ``type`` and ``requests(target, info) -> list[Request]``: the HTTP
requests that deliver one alert to one receiver (usually one; none when the receiver does not
want this alert, e.g. an info message to Alertmanager). Providers are pure: they build bodies,
the Notifier sends them. One module per provider registers itself with :func:`register`;
:func:`provider_for` is the factory keyed by ``AlertProvider.spec.type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .info import AlertInfo

__all__ = ["Provider", "Request", "Target", "build_request", "provider_for", "register", "types"]

DEFAULT_USERNAME = "canary-operator"


@dataclass(frozen=True)
class Target:
    """Where one alert goes: a resolved provider with its address (and token, proxy)."""

    name: str  # <namespace>/<provider name>, or "default" for --alert-webhook
    type: str
    address: str
    channel: str = "general"
    username: str = DEFAULT_USERNAME
    proxy: str | None = None
    token: str | None = field(default=None, repr=False)
    template: str | None = None  # spec.template: the message
    link_template: str | None = None  # spec.linkTemplate


@dataclass(frozen=True)
class Request:
    """One HTTP request of a delivery (POST with a JSON body)."""

    url: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    type: str

    def requests(self, target: Target, info: AlertInfo) -> list[Request]: ...


_REGISTRY: dict[str, Provider] = {}


def register(*names: str) -> Callable[[type], type]:
    """Class decorator: one instance serves every listed type name."""

    def deco(cls: type) -> type:
        instance = cls()
        for name in names:
            _REGISTRY[name] = instance
        return cls

    return deco


def provider_for(kind: str) -> Provider:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unsupported alert provider type {kind!r}; supported: {', '.join(types())}") from None


def types() -> list[str]:
    return sorted(_REGISTRY)


def build_request(target: Target, info: AlertInfo) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(url, JSON body, extra headers) of the first request of one alert for one receiver."""
    reqs = provider_for(target.type).requests(target, info)
    if not reqs:
        raise ValueError(f"{target.type} sends nothing for this alert")
    return reqs[0].url, reqs[0].body, reqs[0].headers


def bearer(target: Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.token}"} if target.token else {}
