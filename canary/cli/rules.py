"""What the operator refuses or ignores at runtime although the schema accepts it, as findings
`canary validate` reports: each with the path of the field and a plain sentence.

The sources of truth are the runtime code: the supported routers (canary.routers.make_router),
workloads (canary.adapters.workload: Deployments only), the builtin metrics and the metric
provider types (canary.adapters.prometheus), the derived names (canary.models)."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Protocol, Union

from pydantic import BaseModel

from canary.adapters.prometheus import BUILTIN_METRICS
from canary.models import DERIVED_SUFFIX, Canary, MetricTemplate

SUPPORTED_PROVIDERS = ("istio", "gatewayapi:v1", "gatewayapi:v1beta1")
SUPPORTED_TARGET_KINDS = ("Deployment",)
SUPPORTED_AUTOSCALER_KINDS = ("HorizontalPodAutoscaler",)
SUPPORTED_METRIC_PROVIDERS = ("prometheus",)
LABEL_MAX = 63


@dataclass
class Finding:
    severity: str  # error | warning | info
    path: list[Any]
    message: str


# ---- unknown fields ------------------------------------------------------------------------------


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], str]:
    """The models an annotation holds, and how: "" (itself), "list" or "dict"."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[type[BaseModel]] = []
        how = ""
        for arg in typing.get_args(annotation):
            models, h = _models_in(arg)
            out += models
            how = how or h
        return out, how
    if origin is list:
        models, _ = _models_in(typing.get_args(annotation)[0])
        return models, "list"
    if origin is dict:
        models, _ = _models_in(typing.get_args(annotation)[1])
        return models, "dict"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], ""
    return [], ""


def _aliases(model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name, info in model.model_fields.items():
        out[info.alias or name] = info.annotation
    return out


def unknown_fields(model: type[BaseModel], data: Any, path: list[Any] | None = None) -> list[Finding]:
    """Fields the models do not know (they are kept, and ignored): a warning naming the likely one."""
    path = path or []
    if not isinstance(data, dict):
        return []
    known = _aliases(model)
    out = []
    for key, value in data.items():
        if key in ("metadata", "status") and not path:
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(sorted(known))})"
            out.append(Finding("warning", [*path, key], f"unknown field {key!r}, ignored by the operator{hint}"))
            continue
        models, how = _models_in(known[key])
        if not models:
            continue
        sub = models[0]
        if how == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                out += unknown_fields(sub, item, [*path, key, i])
        elif how == "dict" and isinstance(value, dict):
            for k, item in value.items():
                out += unknown_fields(sub, item, [*path, key, k])
        elif how == "":
            out += unknown_fields(sub, value, [*path, key])
    return out


# ---- what the operator refuses or ignores ----------------------------------------------------------


def canary_rules(canary: Canary, data: dict[str, Any]) -> list[Finding]:
    spec = canary.spec
    out: list[Finding] = []
    if spec.provider and spec.provider not in SUPPORTED_PROVIDERS:
        out.append(Finding("error", ["spec", "provider"], f"provider {spec.provider!r} is a Flagger provider this "
                           f"operator does not implement: the Canary would fail; use one of "
                           f"{', '.join(SUPPORTED_PROVIDERS)}"))
    kind = spec.target_ref.kind
    if kind not in SUPPORTED_TARGET_KINDS:
        out.append(Finding("error", ["spec", "targetRef", "kind"], f"targetRef.kind {kind} is not supported by this "
                           "operator (only Deployment): the Canary would fail to initialize"))
    target = spec.target_ref.name
    if len(target) + DERIVED_SUFFIX > LABEL_MAX:
        out.append(Finding("error", ["spec", "targetRef", "name"], f"targetRef.name is {len(target)} characters: "
                           f"the derived {target[:20]}...-primary would be over {LABEL_MAX} characters, too long for "
                           "the label value and Service name the operator derives from it"))
    if spec.autoscaler_ref is not None and spec.autoscaler_ref.kind not in SUPPORTED_AUTOSCALER_KINDS:
        out.append(Finding("error", ["spec", "autoscalerRef", "kind"], f"autoscalerRef.kind "
                           f"{spec.autoscaler_ref.kind} is not supported (only HorizontalPodAutoscaler)"))
    for field, alias in (("ingress_ref", "ingressRef"), ("route_ref", "routeRef"), ("upstream_ref", "upstreamRef")):
        if getattr(spec, field) is not None:
            out.append(Finding("warning", ["spec", alias], f"{alias} is used only by Flagger providers this "
                               "operator does not implement (nginx, apisix, gloo): it is ignored"))
    analysis = spec.analysis
    if analysis is None:
        if not spec.skip_analysis:
            out.append(Finding("warning", ["spec"], "no analysis: every new revision is promoted without checks"))
        return out
    a = ["spec", "analysis"]
    raw = (data.get("spec") or {}).get("analysis") or {}
    if analysis.threshold == 0:
        out.append(Finding("warning", [*a, "threshold"], "threshold 0 is taken as 1 (the first failed check rolls "
                           "back)"))
    strategy = analysis.strategy
    if strategy == "canary":
        if not analysis.step_weight and not analysis.step_weights:
            out.append(Finding("error", a, "a canary analysis needs stepWeight or stepWeights (or iterations for "
                               "blue/green, with match for A/B testing): no step would ever move traffic"))
        if analysis.step_weight and analysis.step_weights:
            out.append(Finding("warning", [*a, "stepWeight"], "stepWeight is ignored when stepWeights is set"))
        if analysis.step_weight and analysis.max_weight and analysis.step_weight > analysis.max_weight:
            out.append(Finding("error", [*a, "stepWeight"], f"stepWeight {analysis.step_weight} is more than "
                               f"maxWeight {analysis.max_weight}: the first step would already pass the maximum"))
        if analysis.step_weights and analysis.max_weight:
            out.append(Finding("warning", [*a, "maxWeight"], f"maxWeight is ignored with stepWeights (the last "
                               f"step, {analysis.step_weights[-1]}, is the maximum)"))
    else:
        label = "A/B testing" if strategy == "ab" else "blue/green"
        for key in ("stepWeight", "stepWeights", "maxWeight", "stepWeightPromotion"):
            if key in raw:
                out.append(Finding("warning", [*a, key], f"{key} is ignored with iterations ({label}): traffic "
                                   "moves all at once"))
    if analysis.mirror and strategy != "bluegreen":
        out.append(Finding("warning", [*a, "mirror"], "mirror applies to blue/green (iterations without match) only"))
    if analysis.advisory and any(m.no_data in (None, "fail") and not m.dry_run for m in analysis.metrics or []):
        out.append(Finding("warning", [*a, "advisory"], "advisory: no traffic is routed or mirrored to the canary; "
                           "its checks see only traffic that reaches it directly, and with noData: fail (the "
                           "default) a canary nobody calls would be judged a rollback (docs/analysis.md)"))
    if analysis.interval and analysis.interval_seconds > spec.progress_deadline:
        out.append(Finding("warning", [*a, "interval"], f"interval {analysis.interval} is longer than the progress "
                           f"deadline ({spec.progress_deadline}s): a slow rollout fails before its first check"))
    for i, m in enumerate(analysis.metrics or []):
        p = [*a, "metrics", i]
        if m.name not in BUILTIN_METRICS and m.template_ref is None and not m.query:
            out.append(Finding("error", [*p, "name"], f"metric {m.name!r} is neither builtin "
                               f"({', '.join(BUILTIN_METRICS)}) nor has a templateRef or query: it would fail "
                               "every check"))
        if m.threshold is not None and m.threshold_range is None:
            out.append(Finding("warning", [*p, "threshold"], "threshold is deprecated: use thresholdRange (min or "
                               "max)"))
        if m.threshold_range is None and m.threshold is None and m.compare is None:
            out.append(Finding("warning", p, f"metric {m.name!r} has no thresholdRange: it is measured but can "
                               "never fail"))
    return out


def template_rules(template: MetricTemplate) -> list[Finding]:
    ptype = template.spec.provider.type
    if ptype in SUPPORTED_METRIC_PROVIDERS:
        return []
    return [Finding("error", ["spec", "provider", "type"], f"provider type {ptype} is not supported by this operator "
                    "(only prometheus): every check using this template would fail")]


# ---- references ------------------------------------------------------------------------------------


class Lookup(Protocol):
    where: str

    def template(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def alert_provider(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def refs_missing(canary: Canary, templates: dict[tuple[str, str], MetricTemplate],
                 providers: set[tuple[str, str]], lookup: Lookup | None) -> list[Finding]:
    """templateRef and providerRef that are neither among the documents given nor (with a
    lookup) in the cluster."""
    out: list[Finding] = []
    analysis = canary.spec.analysis
    if analysis is None:
        return out
    where = "the files given" + (f" nor in the cluster ({lookup.where})" if lookup else " (--cluster looks in the cluster)")
    for i, m in enumerate(analysis.metrics or []):
        if m.template_ref is None:
            continue
        key = (m.template_ref.namespace or canary.namespace, m.template_ref.name)
        found: Any = templates.get(key)
        if found is None and lookup is not None:
            raw = lookup.template(*key)
            if raw is not None:
                found = MetricTemplate.from_obj(raw) if raw.get("spec") else None
        if found is None:
            out.append(Finding("error", ["spec", "analysis", "metrics", i, "templateRef"],
                               f"MetricTemplate {key[0]}/{key[1]} is not in {where}: the check would fail"))
        elif found.spec.provider.type not in SUPPORTED_METRIC_PROVIDERS:
            out.append(Finding("error", ["spec", "analysis", "metrics", i, "templateRef"],
                               f"MetricTemplate {key[0]}/{key[1]} uses provider {found.spec.provider.type} (only "
                               "prometheus is supported): the check would fail"))
    for i, alert in enumerate(analysis.alerts or []):
        key = (alert.provider_ref.namespace or canary.namespace, alert.provider_ref.name)
        if key in providers or (lookup is not None and lookup.alert_provider(*key) is not None):
            continue
        out.append(Finding("error", ["spec", "analysis", "alerts", i, "providerRef"],
                           f"AlertProvider {key[0]}/{key[1]} is not in {where}: the alert would not be sent"))
    return out
