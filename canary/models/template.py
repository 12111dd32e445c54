"""The MetricTemplate kind: a reusable query against a metrics provider."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from canary.models.common import ApiModel, MetricProviderType, Names, Query, Url
from canary.models.refs import LocalRef


class MetricProvider(ApiModel):
    type: MetricProviderType
    address: Url | None = None
    headers: Annotated[dict[str, Names], Field(max_length=32)] | None = None
    """HTTP headers sent with every query."""
    secret_ref: LocalRef | None = None
    region: Annotated[str, Field(max_length=253)] | None = None
    insecure_skip_verify: bool | None = None


class MetricTemplateSpec(ApiModel):
    provider: MetricProvider
    query: Query
    """Query rendered with {{ name }}, {{ namespace }}, {{ target }}, {{ interval }}, {{ variables.x }} ..."""


class MetricTemplate(ApiModel):
    """A reusable metric query against a metrics provider."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MetricTemplateSpec

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> MetricTemplate:
        return cls.model_validate(obj)
