"""The Canary kind: its spec (target, references, service, analysis) and the object."""

from __future__ import annotations

import re as _re
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from canary.models.analysis import Analysis
from canary.models.common import (
    CANARY_NAME_MAX,
    DERIVED_SUFFIX,
    DNS1035_LABEL,
    ApiModel,
    Int32,
    Provider,
    Url,
)
from canary.models.refs import AutoscalerRef, IngressRef, RouteRef, TargetRef, UpstreamRef
from canary.models.service import Service
from canary.models.status import CanaryStatus


class CanarySpec(ApiModel):
    """The desired release process for one workload."""

    # Flagger's schema requires analysis; the model keeps it optional (skipAnalysis semantics).
    model_config = ConfigDict(json_schema_extra={"required": ["targetRef", "analysis"]})

    provider: Provider | None = None
    """Routing provider for this canary (overrides the operator default)."""
    metrics_server: Url | None = None
    """Prometheus URL for the built-in metrics (overrides the operator default)."""
    target_ref: TargetRef
    autoscaler_ref: AutoscalerRef | None = None
    ingress_ref: IngressRef | None = None
    route_ref: RouteRef | None = None
    upstream_ref: UpstreamRef | None = None
    service: Service | None = None
    analysis: Analysis | None = None
    progress_deadline_seconds: Int32 | None = None
    """Seconds a rollout may take before it counts as failed (default 600)."""
    skip_analysis: bool | None = None
    revert_on_deletion: bool | None = None
    suspend: bool | None = None

    @model_validator(mode="after")
    def _derived_names_fit(self) -> CanarySpec:
        if self.service is not None and self.service.name is None:
            name = self.target_ref.name
            if len(name) > 63 - DERIVED_SUFFIX or not _re.fullmatch(DNS1035_LABEL, name):
                raise ValueError(f"service.name defaults to targetRef.name {name[:80]!r}, which is not a valid "
                                 f"Service name with room for -primary/-canary (DNS-1035 label of at most "
                                 f"{63 - DERIVED_SUFFIX} characters): set service.name")
        return self

    @property
    def progress_deadline(self) -> int:
        # 0 is no deadline a Deployment could meet (Kubernetes refuses it there): the default
        return self.progress_deadline_seconds if self.progress_deadline_seconds else 600

    @property
    def analysis_skipped(self) -> bool:
        return bool(self.skip_analysis) or self.analysis is None

    @property
    def service_name(self) -> str:
        return self.service.name_or(self.target_ref.name) if self.service else self.target_ref.name


class Canary(ApiModel):
    """A progressive delivery of a Deployment (canary, A/B testing or blue/green)."""

    api_version: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CanarySpec
    status: CanaryStatus | None = None

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Canary:
        return cls.model_validate(obj)

    @model_validator(mode="after")
    def _name_fits_events(self) -> Canary:
        if len(self.name) > CANARY_NAME_MAX:
            raise ValueError(f"metadata.name is longer than {CANARY_NAME_MAX} characters (Event names "
                             "derived from it would not fit)")
        return self

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))
