"""References from a Canary to other objects (target, autoscaler, ingress, Secrets, templates)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from canary.models.common import ApiModel, DerivedObjectName, NamespaceName, ObjectName, Query


class TargetRef(ApiModel):
    """The workload under canary control."""

    api_version: Annotated[str, Field(max_length=253)]
    kind: Literal["Deployment", "DaemonSet", "Service"]
    name: DerivedObjectName


class PrimaryScalerReplicas(ApiModel):
    min_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None
    max_replicas: Annotated[int, Field(ge=1, le=100000)] | None = None


class AutoscalerRef(ApiModel):
    """HorizontalPodAutoscaler or KEDA ScaledObject copied for the primary."""

    api_version: Annotated[str, Field(max_length=253)]
    kind: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    name: DerivedObjectName
    primary_scaler_queries: Annotated[dict[str, Query], Field(max_length=32)] | None = None
    """ScaledObject trigger name -> query to use for the primary."""
    primary_scaler_replicas: PrimaryScalerReplicas | None = None


class IngressRef(ApiModel):
    api_version: Annotated[str, Field(max_length=253)]
    kind: Literal["Ingress"]
    name: DerivedObjectName


class RouteRef(ApiModel):
    api_version: Annotated[str, Field(max_length=253)]
    kind: Literal["ApisixRoute"]
    name: DerivedObjectName


class UpstreamRef(ApiModel):
    api_version: Annotated[str, Field(max_length=253)]
    kind: Literal["Upstream"]
    name: DerivedObjectName
    namespace: NamespaceName | None = None


class LocalRef(ApiModel):
    """A reference by name in the same namespace (Secret)."""

    name: ObjectName


class NamespacedRef(ApiModel):
    """A reference by name, optionally in another namespace."""

    name: ObjectName
    namespace: NamespaceName | None = None
