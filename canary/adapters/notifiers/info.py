"""What an alert says: the facts of one alert, taken from the Canary, its status and its target.

Pure (no I/O). Every provider module turns an :class:`AlertInfo` into the body its receiver
expects; the text in it comes from tenants' specs and from remote answers, so providers escape
it for their own markup (see :mod:`canary.adapters.notifiers.text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from canary.models import Canary, CanaryStatus

__all__ = ["SEVERITY_RANK", "AlertInfo", "describe", "images_of", "routes_to", "traffic_routing"]

SEVERITY_RANK = {"info": 0, "warn": 1, "error": 2}


def routes_to(entry_severity: str | None, alert_severity: str) -> bool:
    """True if an alerts entry with `entry_severity` receives an alert of `alert_severity`.

    info (or missing) -> every alert; warn -> warn and error; error -> error only.
    """
    wanted = SEVERITY_RANK.get(entry_severity or "info")
    got = SEVERITY_RANK.get(alert_severity, 0)
    return wanted is not None and got >= wanted


def _num(value: float) -> str:
    return f"{value:.6g}" if value != int(value) else str(int(value))


@dataclass(frozen=True)
class AlertInfo:
    """Everything a message may show."""

    canary: str
    namespace: str
    severity: str
    message: str
    phase: str = ""
    weight: int = 0
    revision: str = ""
    image: str | None = None
    target: str = ""  # Kind/name.namespace
    check: str | None = None  # the deciding check (status.lastFailure; error alerts only)
    value: float | None = None
    failure: str | None = None  # status.lastFailure.message
    failed_checks: int = 0
    threshold: int = 1
    progress_deadline: int = 600
    traffic: str = ""
    cluster: str = ""  # --cluster-name
    link: str | None = None  # the AlertProvider's rendered linkTemplate
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def subject(self) -> str:
        """<name>.<namespace>, as Flagger titles its messages (with the cluster when known)."""
        base = f"{self.canary}.{self.namespace}"
        return f"{base} ({self.cluster})" if self.cluster else base

    @property
    def value_text(self) -> str:
        return "" if self.value is None else _num(self.value)

    @property
    def resolved(self) -> bool:
        """The release this alert is about was promoted: incidents about it are over."""
        return self.phase in ("Succeeded", "Initialized") and self.severity == "info"

    def with_(self, **changes: Any) -> AlertInfo:
        return replace(self, **changes)

    def fields(self) -> list[tuple[str, str]]:
        """Every fact as a (title, value) pair, in a stable order (generic JSON, cards)."""
        out = []
        if self.cluster:
            out.append(("Cluster", self.cluster))
        out.append(("Target", self.target))
        if self.image:
            out.append(("Image", self.image))
        if self.revision:
            out.append(("Revision", self.revision))
        out.append(("Phase", self.phase or "-"))
        out.append(("Weight", f"{self.weight}%"))
        out.append(("Failed checks", f"{self.failed_checks}/{self.threshold}"))
        if self.check:
            out.append(("Failed check", self.check))
        if self.value is not None:
            out.append(("Value", self.value_text))
        if self.reason:
            out.append(("Reason", self.reason))
        out.append(("Progress deadline", f"{self.progress_deadline}s"))
        if self.traffic:
            out.append(("Traffic routing", self.traffic))
        return out

    @property
    def reason(self) -> str:
        """The failure's own message when the alert's message does not already say it."""
        return self.failure if self.failure and self.failure not in self.message else ""

    def dense_fields(self) -> list[tuple[str, str, bool]]:
        """Fewer, denser (title, value, short) fields for chat rooms: what happened, to what, where."""
        out: list[tuple[str, str, bool]] = []
        if self.cluster:
            out.append(("Cluster", self.cluster, True))
        out.append(("Target", self.target, True))
        out.append(("Status", f"{self.phase or '-'} · weight {self.weight}% · "
                              f"failed checks {self.failed_checks}/{self.threshold}", False))
        if self.check:
            check = self.check + (f" = {self.value_text}" if self.value is not None else "")
            out.append(("Failed check", check, True))
        if self.reason:
            out.append(("Reason", self.reason, False))
        if self.image:
            out.append(("Image", self.image, False))
        if self.traffic:
            out.append(("Traffic", f"{self.traffic} · deadline {self.progress_deadline}s", False))
        return out


def traffic_routing(canary: Canary) -> str:
    """Flagger's "Traffic routing" text for the Canary's strategy."""
    analysis = canary.spec.analysis
    if analysis is None:
        return ""
    strategy = analysis.strategy
    if strategy == "ab":
        return "A/B Testing"
    if strategy == "bluegreen":
        return "Blue/Green"
    if analysis.step_weights:
        steps = ",".join(str(w) for w in analysis.step_weights)
        return f"Weight steps: {steps} max: {analysis.max_weight_value}"
    return f"Weight step: {analysis.step_weight or 0} max: {analysis.max_weight_value}"


def images_of(deployment: Mapping[str, Any] | None) -> str | None:
    """The container images of a Deployment's pod template, comma separated."""
    if not deployment:
        return None
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    images = [str(c.get("image")) for c in spec.get("containers") or [] if c.get("image")]
    return ", ".join(images) or None


def describe(canary: Canary, alert: Any, deployment: Mapping[str, Any] | None = None,
             now: datetime | None = None, status: CanaryStatus | None = None,
             cluster: str = "") -> AlertInfo:
    """The facts of one alert. `status` defaults to the Canary's own; `deployment` is the target."""
    st = status if status is not None else (canary.status or CanaryStatus())
    spec = canary.spec
    # the deciding check belongs to failures only: a run may have had failed checks below the
    # threshold and still be promoted (lastFailure then stays in the status)
    failure = st.last_failure if alert.severity == "error" else None
    return AlertInfo(
        canary=canary.name,
        namespace=canary.namespace,
        severity=alert.severity,
        message=alert.message,
        phase=st.phase.value,
        weight=st.canary_weight,
        revision=st.last_applied_spec or "",
        image=images_of(deployment),
        target=f"{spec.target_ref.kind}/{spec.target_ref.name}.{canary.namespace}",
        check=failure.check if failure else None,
        value=failure.value if failure else None,
        failure=failure.message if failure else None,
        failed_checks=st.failed_checks,
        threshold=spec.analysis.threshold_value if spec.analysis else 1,
        progress_deadline=spec.progress_deadline,
        traffic=traffic_routing(canary),
        cluster=cluster,
        timestamp=now or datetime.now(timezone.utc),
    )
