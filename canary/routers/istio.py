"""Istio router: DestinationRules `<svc>-primary`/`<svc>-canary` and VirtualService `<svc>`.

Shapes follow Flagger's Istio router (docs: flagger.md 4.5). The pure builders
(`build_virtual_service`, `build_destination_rules`, `read_routes`) do no I/O; `IstioRouter`
compares what they produce with the cluster and writes only on a difference.

A VirtualService or DestinationRule that exists but is not ours is taken over: its original
spec is stored (JSON) in the annotation `canary.dev/original-configuration`, and `finalize()`
puts it back.

Session affinity (analysis.sessionAffinity, canary strategy only; cookies: `canary.routers.affinity`):
sticky rules matching the `cookie` header come ahead of the weighted rule, each with a single
destination (so `read_routes` never mistakes one for the weighted rule), and the weighted rule's
canary destination (and primary destination with primaryCookieName) adds a `Set-Cookie` response
header. After a run, one rule expires the run's canary cookie.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from canary.adapters.kube import Kube
from canary.adapters.workload import (
    FLUX_DISABLED,
    as_canary,
    owner_references,
    service_name,
)
from canary.models import Canary, HTTPMatchRequest
from canary.routers.affinity import Sticky, cookie_regex, sticky
from canary.routers import objects
from canary.routers.base import RouterError
from canary.routers.objects import ORIGINAL_ANNOTATION, apex_metadata
from canary.types import Routes

GROUP = "networking.istio.io"
VERSIONS = ("v1beta1", "v1", "v1alpha3")  # preference order
DEFAULT_API_VERSION = f"{GROUP}/v1beta1"


# ---- pure builders ----------------------------------------------------------------------


def _service(canary: Canary):
    if canary.spec.service is None:
        raise RouterError(f"canary {canary.name}: spec.service is required by the istio provider")
    return canary.spec.service


def _names(canary: Canary) -> tuple[str, str, str]:
    apex = service_name(canary)
    return apex, f"{apex}-primary", f"{apex}-canary"


def _destination(canary: Canary, host: str, weight: int, *, tcp: bool = False,
                 set_cookie: str | None = None) -> dict:
    svc = _service(canary)
    dest: dict[str, Any] = {"host": host}
    gateways = svc.gateways or []
    if tcp or (svc.port_discovery and (svc.delegation or any(g != "mesh" for g in gateways))):
        # several Service ports: a gateway (or a delegate, or TCP) must name the one to use
        dest["port"] = {"number": svc.port}
    out: dict[str, Any] = {"destination": dest, "weight": weight}
    if set_cookie:
        out["headers"] = {"response": {"add": {"Set-Cookie": set_cookie}}}
    return out


def _cookie_matches(service_match: list[dict], cookie: str) -> list[dict]:
    """Each service match (or a bare one) AND the Cookie header containing `cookie`."""
    header = {"cookie": {"regex": cookie_regex(cookie)}}
    return [{**copy.deepcopy(m), "headers": {**(m.get("headers") or {}), **header}}
            for m in service_match or [{}]]


def sticky_rules(canary: Canary, aff: Sticky, service_match: list[dict], options: dict) -> list[dict]:
    """The cookie rules that go ahead of the weighted rule (canary, primary, expired cookie)."""
    _, primary, canary_host = _names(canary)
    rules = []
    for cookie, host, set_cookie in ((aff.canary_cookie, canary_host, None),
                                     (aff.primary_cookie, primary, None),
                                     (aff.expired_cookie, primary, aff.expire_set_cookie)):
        if cookie:
            rules.append({"match": _cookie_matches(service_match, cookie), **copy.deepcopy(options),
                          "route": [_destination(canary, host, 100, set_cookie=set_cookie)]})
    return rules


def _dump(model) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_matches(analysis: list[HTTPMatchRequest], service: list[HTTPMatchRequest] | None) -> list[dict]:
    """analysis.match × service.match: each A/B condition AND-ed with each service condition.

    Map fields (headers, queryParams, withoutHeaders, sourceLabels) are united (the A/B side wins
    a conflict); any other field of the A/B condition replaces the service's.
    """
    a_side = [_dump(m) for m in analysis]
    if not service:
        return a_side
    merged = []
    for a in a_side:
        for s in service:
            m = _dump(s)
            for key, value in a.items():
                if isinstance(value, dict) and isinstance(m.get(key), dict):
                    m[key] = {**m[key], **value}
                else:
                    m[key] = copy.deepcopy(value)
            merged.append(m)
    return merged


def _http_options(canary: Canary) -> dict:
    """rewrite, timeout, retries, corsPolicy, headers: the same on every HTTP rule."""
    svc = _service(canary)
    out: dict[str, Any] = {}
    if svc.rewrite is not None:
        rewrite = {k: v for k, v in (("uri", svc.rewrite.uri), ("authority", svc.rewrite.authority)) if v}
        if rewrite:
            out["rewrite"] = rewrite
    if svc.timeout:
        out["timeout"] = svc.timeout
    if svc.retries is not None:
        out["retries"] = _dump(svc.retries)
    if svc.cors_policy is not None:
        out["corsPolicy"] = _dump(svc.cors_policy)
    if svc.headers is not None:
        out["headers"] = _dump(svc.headers)
    return out


def build_virtual_service(canary: Canary, routes: Routes | None = None,
                          api_version: str = DEFAULT_API_VERSION) -> dict:
    """The VirtualService `<svc>` routing `routes` (default 100/0, not mirrored)."""
    canary = as_canary(canary)
    routes = routes or Routes()
    svc = _service(canary)
    apex, primary, canary_host = _names(canary)
    if svc.delegation and (svc.hosts or svc.gateways):
        raise RouterError(f"canary {canary.name}: service.delegation cannot be combined with "
                          "service.hosts or service.gateways")

    spec: dict[str, Any] = {}
    if not svc.delegation:
        hosts = list(svc.hosts or [])
        if apex not in hosts and "*" not in hosts:
            hosts.append(apex)
        spec["hosts"] = hosts
        spec["gateways"] = list(svc.gateways or ["mesh"])

    weighted = [_destination(canary, primary, routes.primary),
                _destination(canary, canary_host, routes.canary)]
    if (svc.app_protocol or "").lower() == "tcp":
        spec["tcp"] = [{
            "match": [{"port": svc.port}],
            "route": [_destination(canary, primary, routes.primary, tcp=True),
                      _destination(canary, canary_host, routes.canary, tcp=True)],
        }]
    else:
        options = _http_options(canary)
        service_match = [_dump(m) for m in svc.match or []]
        analysis = canary.spec.analysis
        if analysis is not None and analysis.strategy == "ab":
            first: dict[str, Any] = {"match": merge_matches(analysis.match or [], svc.match),
                                     **options, "route": weighted}
            default: dict[str, Any] = {**options, "route": [_destination(canary, primary, 100)]}
            if service_match:
                default = {"match": service_match, **default}
            rules = [first, default]
        else:
            aff = sticky(canary, routes)
            if aff is not None:
                weighted = [_destination(canary, primary, routes.primary, set_cookie=aff.primary_set_cookie),
                            _destination(canary, canary_host, routes.canary, set_cookie=aff.canary_set_cookie)]
            first = {**options, "route": weighted}
            if service_match:
                first = {"match": service_match, **first}
            rules = [first]
            if aff is not None:
                rules = sticky_rules(canary, aff, service_match, options) + rules
        if routes.mirrored:
            first["mirror"] = {"host": canary_host}
            weight = analysis.mirror_weight if analysis is not None else None
            if weight:
                first["mirrorPercentage"] = {"value": weight}
        spec["http"] = rules

    meta = apex_metadata(canary, apex)
    return {"apiVersion": api_version, "kind": "VirtualService", "metadata": meta, "spec": spec}


def build_destination_rules(canary: Canary, api_version: str = DEFAULT_API_VERSION) -> list[dict]:
    """DestinationRules `<svc>-primary` and `<svc>-canary` (host = name, service.trafficPolicy)."""
    canary = as_canary(canary)
    svc = _service(canary)
    _, primary, canary_host = _names(canary)
    out = []
    for host in (primary, canary_host):
        spec: dict[str, Any] = {"host": host}
        if svc.traffic_policy:
            spec["trafficPolicy"] = copy.deepcopy(svc.traffic_policy)
        meta: dict[str, Any] = {"name": host, "namespace": canary.namespace,
                                "annotations": dict(FLUX_DISABLED)}
        owners = owner_references(canary)
        if owners:
            meta["ownerReferences"] = owners
        out.append({"apiVersion": api_version, "kind": "DestinationRule", "metadata": meta, "spec": spec})
    return out


def read_routes(canary: Canary, vs: dict) -> Routes | None:
    """The weights of the rule that routes to both `<svc>-primary` and `<svc>-canary`.

    None when the VirtualService has no such rule (e.g. a foreign one not taken over yet).
    """
    _, primary, canary_host = _names(canary)
    spec = vs.get("spec") or {}
    for rule in (spec.get("tcp") or []) + (spec.get("http") or []):
        dests = rule.get("route") or []
        weights = {(d.get("destination") or {}).get("host"): int(d.get("weight") or 0) for d in dests}
        if len(dests) == 2 and set(weights) == {primary, canary_host}:
            return Routes(primary=weights[primary], canary=weights[canary_host],
                          mirrored="mirror" in rule)
    return None


# ---- the router ---------------------------------------------------------------------------


Cache = Callable[[str, str, str], "dict | None"]  # (plural, namespace, name) -> object from a watch


class IstioRouter:
    def __init__(self, kube: Kube, *, api_version: str | None = None, cache: Cache | None = None):
        self.kube = kube
        self._api_version = api_version
        self._cache = cache  # watch cache: saves a GET per tick; stale entries end in 409 + retry

    async def _read(self, version: str, plural: str, namespace: str, name: str, fresh: bool) -> dict | None:
        if self._cache is not None and not fresh:
            obj = self._cache(plural, namespace, name)
            if obj is not None:
                return obj
        return await self.kube.get(version, plural, namespace, name)

    async def api_version(self) -> str:
        if self._api_version is None:
            found = await self.kube.first_served(GROUP, VERSIONS)
            if found is None:
                raise RouterError(f"the cluster serves no {GROUP} API (Istio CRDs not installed?)")
            self._api_version = found
        return self._api_version

    # -- Router interface --

    async def reconcile(self, canary: Canary) -> None:
        canary = as_canary(canary)
        version = await self.api_version()
        for dr in build_destination_rules(canary, version):
            await self._upsert(canary, "destinationrules", lambda _existing, dr=dr: dr)

        def desired(existing: dict | None) -> dict:
            current = read_routes(canary, existing) if existing is not None else None
            return build_virtual_service(canary, current or Routes(), version)

        await self._upsert(canary, "virtualservices", desired)

    async def get_routes(self, canary: Canary) -> Routes | None:
        """None when the VirtualService is missing or has no primary/canary route yet (a foreign
        VirtualService that `reconcile` has not taken over)."""
        canary = as_canary(canary)
        vs = await self._read(await self.api_version(), "virtualservices", canary.namespace,
                              service_name(canary), fresh=False)
        return None if vs is None else read_routes(canary, vs)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        canary = as_canary(canary)
        version = await self.api_version()
        await self._upsert(canary, "virtualservices",
                           lambda _existing: build_virtual_service(canary, routes, version))

    async def finalize(self, canary: Canary) -> None:
        """Restore taken-over objects; ours are garbage collected with the Canary."""
        canary = as_canary(canary)
        version = await self.api_version()
        apex, primary, canary_host = _names(canary)
        for plural, name in (("virtualservices", apex), ("destinationrules", primary),
                             ("destinationrules", canary_host)):
            await self._restore(version, plural, canary.namespace, name)

    # -- I/O helpers --

    async def _upsert(self, canary: Canary, plural: str, desired_for: Callable[[dict | None], dict]) -> None:
        version = await self.api_version()
        name = desired_for(None)["metadata"]["name"]

        async def read(fresh: bool) -> dict | None:
            return await self._read(version, plural, canary.namespace, name, fresh=fresh)

        await objects.upsert(self.kube, canary, version, plural, name, read, desired_for)

    async def _restore(self, version: str, plural: str, namespace: str, name: str) -> None:
        await objects.restore(self.kube, version, plural, namespace, name)


__all__ = ["IstioRouter", "build_virtual_service", "build_destination_rules", "read_routes",
           "merge_matches", "sticky_rules", "ORIGINAL_ANNOTATION"]
