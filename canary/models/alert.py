"""The AlertProvider kind: where analysis alerts are sent."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from canary.models.common import AlertProviderType, ApiModel, PrintableText, ProxyUrl, Url
from canary.models.refs import LocalRef


class AlertProviderSpec(ApiModel):
    # Flagger: oneOf [type+address] | [type+secretRef]. We accept both together (anyOf).
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["address"]}, {"required": ["secretRef"]}]}
    )
    type: AlertProviderType
    """googlechat and generic are our additions to Flagger's list."""
    channel: Annotated[str, Field(max_length=256, pattern=PrintableText)] | None = None
    """Default general."""
    username: Annotated[str, Field(max_length=256, pattern=PrintableText)] | None = None
    """Default canary-operator."""
    address: Url | None = None
    """Webhook URL (the Secret key address overrides it)."""
    proxy: ProxyUrl | None = None
    secret_ref: LocalRef | None = None
    # our additions (docs/alerts.md): the msteams-workflows, alertmanager, pagerduty, opsgenie types
    template: str | None = Field(default=None, max_length=4096)
    """The message, as a template: {{ canary }}, {{ namespace }}, {{ phase }}, {{ message }}, ... (docs/alerts.md)."""
    link_template: str | None = Field(default=None, max_length=1024)
    """A link shown with every message, as a template; must render to an http(s) URL."""

    @model_validator(mode="after")
    def _address_or_secret(self) -> AlertProviderSpec:
        if self.address is None and self.secret_ref is None:
            raise ValueError("an alert provider needs address or secretRef")
        return self

    @property
    def channel_value(self) -> str:
        return self.channel or "general"

    @property
    def username_value(self) -> str:
        return self.username or "canary-operator"


class AlertProvider(ApiModel):
    """Where analysis alerts are sent (chat or a generic webhook)."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: AlertProviderSpec

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> AlertProvider:
        return cls.model_validate(obj)
