"""`canary validate --prometheus URL`: every metric query of a Canary run now against a real
Prometheus, for the target as it exists now, by the operator's own code (the builtin PromQL,
the templates rendered, the bounds judged), with the URL in place of every provider address.

The three answers a person needs before a release: the value (and whether it would pass), "no
data" (the query matches no series: Flagger's "Halt advancement no values found"), or the
error Prometheus gave for the PromQL."""

from __future__ import annotations

import copy
from typing import Any

from canary.adapters.prometheus import run_metrics
from canary.cli.rules import Finding, Lookup
from canary.models import Canary, MetricTemplate


async def run_queries(canary: Canary, url: str, templates: dict[tuple[str, str], MetricTemplate],
                      lookup: Lookup | None) -> list[Finding]:
    def get_template(namespace: str, name: str) -> Any:
        found: Any = templates.get((namespace, name))
        raw = found.dump() if found is not None else (lookup.template(namespace, name) if lookup else None)
        if raw is None:
            return None
        raw = copy.deepcopy(raw)
        (raw.get("spec") or {}).get("provider", {}).pop("address", None)  # the URL given instead
        return raw

    obj = canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    obj["spec"].pop("metricsServer", None)
    results = await run_metrics(obj, url, get_template, None, timeout=10.0, retries=0,
                                mesh_provider=canary.spec.provider or "istio")
    out = []
    for i, r in enumerate(results):
        path = ["spec", "analysis", "metrics", i]
        bounds = ", ".join(x for x in (f"min {r.min:g}" if r.min is not None else "",
                                       f"max {r.max:g}" if r.max is not None else "") if x)
        if r.value is not None:
            verdict = "passes" if r.ok else "would FAIL"
            out.append(Finding("info" if r.ok else "warning", path,
                               f"{r.name} = {r.value:.6g} now ({bounds or 'no bounds'}): {verdict}; query: {r.query}"))
        elif "no values" in r.message or "no data" in r.message:
            out.append(Finding("warning", path, f"{r.name}: no data: the query matches no series now (the operator "
                               f"would halt: \"no values found\"); query: {r.query}"))
        else:
            out.append(Finding("error", path, f"{r.name}: {r.message}"))
    return out
