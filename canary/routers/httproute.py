"""Pure builders of the Gateway API HTTPRoute (no I/O): `build_httproute`, `read_routes`,
`route_status_problem` and `map_match`. The shapes and the differences from Flagger are told in
canary/routers/gatewayapi.py, whose `GatewayAPIRouter` writes what these build."""

from __future__ import annotations

import copy
from typing import Any

from canary.adapters.workload import as_canary, service_name
from canary.duration import parse_duration
from canary.models import Canary
from canary.routers.affinity import Sticky, cookie_regex, sticky
from canary.routers.base import RouterError
from canary.routers.istio import merge_matches
from canary.routers.objects import apex_metadata
from canary.types import Routes

GROUP = "gateway.networking.k8s.io"
PLURAL = "httproutes"
DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}
CORS_DEFAULT_MAX_AGE = 5  # seconds; the API server's default for HTTPCORSFilter.maxAge

_PATH_TYPES = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}
_VALUE_TYPES = {"exact": "Exact", "regex": "RegularExpression"}


# ---- pure builders ----------------------------------------------------------------------


def _service(canary: Canary):
    svc = canary.spec.service
    if svc is None:
        raise RouterError(f"canary {canary.name}: spec.service is required by the Gateway API provider")
    if not svc.gateway_refs:
        raise RouterError(f"canary {canary.name}: spec.service.gatewayRefs is required by the Gateway API "
                          "provider (the Gateways the HTTPRoute attaches to)")
    return svc


def _names(canary: Canary) -> tuple[str, str, str]:
    apex = service_name(canary)
    return apex, f"{apex}-primary", f"{apex}-canary"


def _dump(model) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _string_match(value: dict, where: str, types: dict[str, str]) -> tuple[str, str]:
    """An Istio StringMatch ({exact|prefix|regex: v}) as a Gateway API (type, value)."""
    for key, kind in types.items():
        if key in value:
            return kind, str(value[key])
    given = ", ".join(sorted(value)) or "nothing"
    raise RouterError(f"{where}: the Gateway API supports {' or '.join(types)} only (got {given})")


def _name_values(values: dict, where: str) -> list[dict]:
    out = []
    for name, sm in values.items():
        kind, value = _string_match(sm or {}, f"{where}.{name}", _VALUE_TYPES)
        out.append({"name": name, "type": kind, "value": value})
    return out


def map_match(match: dict, where: str) -> dict:
    """One Istio-style HTTPMatchRequest (as JSON) -> one HTTPRouteMatch.

    Supported: uri (exact, prefix, regex), method (exact), headers and queryParams (exact,
    regex). `name` is informative and dropped, `ignoreUriCase: false` is harmless; anything
    else raises RouterError naming the field.
    """
    out: dict[str, Any] = {}
    for key, value in match.items():
        if key == "name" or (key == "ignoreUriCase" and not value):
            continue
        if key == "uri":
            kind, path = _string_match(value, f"{where}.uri", _PATH_TYPES)
            out["path"] = {"type": kind, "value": path}
        elif key == "method":
            _, method = _string_match(value, f"{where}.method", {"exact": "Exact"})
            out["method"] = method.upper()
        elif key == "headers":
            out["headers"] = _name_values(value, f"{where}.headers")
        elif key == "queryParams":
            out["queryParams"] = _name_values(value, f"{where}.queryParams")
        else:
            raise RouterError(f"{where}.{key} is not supported by the Gateway API provider "
                              "(supported: uri, method, headers, queryParams)")
    return {"path": copy.deepcopy(DEFAULT_MATCH["path"]), **out}


def _map_matches(matches: list[dict], where: str) -> list[dict]:
    return [map_match(m, f"{where}[{i}]") for i, m in enumerate(matches)]


def _parent_refs(canary: Canary) -> list[dict]:
    out = []
    for ref in _service(canary).gateway_refs or []:
        item: dict[str, Any] = {"group": ref.group_value, "kind": ref.kind_value}
        if ref.namespace:
            item["namespace"] = ref.namespace
        item["name"] = ref.name
        if ref.section_name:
            item["sectionName"] = ref.section_name
        if ref.port:
            item["port"] = ref.port
        out.append(item)
    return out


def _backend(name: str, port: int, weight: int | None = None, set_cookie: str | None = None,
             namespace: str | None = None) -> dict:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name}
    if namespace:
        ref["namespace"] = namespace
    ref["port"] = port
    if weight is not None:
        ref["weight"] = weight
    if set_cookie:
        ref["filters"] = [{"type": "ResponseHeaderModifier",
                           "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": set_cookie}]}}]
    return ref


def _header_modifier(ops) -> dict:
    out: dict[str, Any] = {}
    for key in ("set", "add"):
        values = getattr(ops, key)
        if values:
            out[key] = [{"name": k, "value": v} for k, v in values.items()]
    if ops.remove:
        out["remove"] = list(ops.remove)
    return out


def _cors(canary: Canary) -> dict | None:
    policy = _service(canary).cors_policy
    if policy is None:
        return None
    origins = list(policy.allow_origin or [])
    # StringMatch origins: only exact values have a Gateway API equivalent
    origins += [o.exact for o in policy.allow_origins or [] if o.exact]
    cors: dict[str, Any] = {}
    if origins:
        cors["allowOrigins"] = origins
    if policy.allow_credentials is not None:
        cors["allowCredentials"] = policy.allow_credentials
    for field, value in (("allowMethods", policy.allow_methods), ("allowHeaders", policy.allow_headers),
                         ("exposeHeaders", policy.expose_headers)):
        if value:
            cors[field] = list(value)
    max_age = CORS_DEFAULT_MAX_AGE
    if policy.max_age:
        try:
            max_age = int(parse_duration(policy.max_age))
        except ValueError as e:
            raise RouterError(f"canary {canary.name}: service.corsPolicy.maxAge: {e}") from e
    cors["maxAge"] = max_age
    return cors


def _filters(canary: Canary, version: str) -> list[dict]:
    """The filters every rule carries, in Flagger's order."""
    svc = _service(canary)
    out: list[dict] = []
    if svc.headers is not None:
        if svc.headers.request is not None and (mod := _header_modifier(svc.headers.request)):
            out.append({"type": "RequestHeaderModifier", "requestHeaderModifier": mod})
        if svc.headers.response is not None and (mod := _header_modifier(svc.headers.response)):
            out.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": mod})
    if svc.rewrite is not None and (svc.rewrite.uri or svc.rewrite.authority):
        rewrite: dict[str, Any] = {}
        if svc.rewrite.authority:
            rewrite["hostname"] = svc.rewrite.authority
        if svc.rewrite.uri:
            if svc.rewrite.type == "ReplacePrefixMatch":
                rewrite["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": svc.rewrite.uri}
            else:
                rewrite["path"] = {"type": "ReplaceFullPath", "replaceFullPath": svc.rewrite.uri}
        out.append({"type": "URLRewrite", "urlRewrite": rewrite})
    for mirror in svc.mirror or []:
        ref = mirror.backend_ref
        backend: dict[str, Any] = {"group": ref.group if ref.group is not None else "",
                                   "kind": ref.kind or "Service"}
        if ref.namespace:
            backend["namespace"] = ref.namespace
        backend["name"] = ref.name
        if ref.port:
            backend["port"] = ref.port
        out.append({"type": "RequestMirror", "requestMirror": {"backendRef": backend}})
    if version == "v1" and (cors := _cors(canary)) is not None:
        out.append({"type": "CORS", "cors": cors})
    return out


def _timeouts(canary: Canary, version: str) -> dict | None:
    svc = _service(canary)
    if version != "v1":
        return None
    out = {k: v for k, v in (("request", svc.timeout), ("backendRequest", svc.backend_timeout)) if v}
    return out or None


def _rule(matches: list[dict], filters: list[dict], timeouts: dict | None, backends: list[dict]) -> dict:
    rule: dict[str, Any] = {"matches": matches}
    if filters:
        rule["filters"] = filters
    if timeouts:
        rule["timeouts"] = dict(timeouts)
    rule["backendRefs"] = backends
    return rule


def _cookie_matches(matches: list[dict], cookie: str) -> list[dict]:
    header = {"name": "Cookie", "type": "RegularExpression", "value": cookie_regex(cookie)}
    return [{**copy.deepcopy(m), "headers": [*(m.get("headers") or []), header]} for m in matches]


def _sticky_rules(canary: Canary, aff: Sticky, matches: list[dict], filters: list[dict],
                  timeouts: dict | None) -> list[dict]:
    _, primary, canary_svc = _names(canary)
    port = _service(canary).port
    rules = []
    for cookie, name, set_cookie in ((aff.canary_cookie, canary_svc, None),
                                     (aff.primary_cookie, primary, None),
                                     (aff.expired_cookie, primary, aff.expire_set_cookie)):
        if cookie:
            rules.append(_rule(_cookie_matches(matches, cookie), copy.deepcopy(filters), timeouts,
                               [_backend(name, port, 100, set_cookie)]))
    return rules


def build_httproute(canary: Canary, routes: Routes | None = None, version: str = "v1") -> dict:
    """The HTTPRoute `<svc>` routing `routes` (default 100/0, not mirrored), as `version` serves it."""
    canary = as_canary(canary)
    routes = routes or Routes()
    svc = _service(canary)
    apex, primary, canary_svc = _names(canary)
    filters = _filters(canary, version)
    timeouts = _timeouts(canary, version)
    service_match = [_dump(m) for m in svc.match or []]
    matches = _map_matches(service_match, "spec.service.match") or [copy.deepcopy(DEFAULT_MATCH)]
    analysis = canary.spec.analysis

    weighted_filters = copy.deepcopy(filters)
    if routes.mirrored:
        mirror: dict[str, Any] = {"backendRef": _backend(canary_svc, svc.port)}
        if version == "v1" and analysis is not None and analysis.mirror_weight and analysis.mirror_weight < 100:
            mirror["percent"] = analysis.mirror_weight
        weighted_filters.append({"type": "RequestMirror", "requestMirror": mirror})

    if analysis is not None and analysis.strategy == "ab":
        _map_matches([_dump(m) for m in analysis.match or []], "spec.analysis.match")  # errors name the user's index
        ab = merge_matches(analysis.match or [], svc.match)
        rules = [
            _rule(_map_matches(ab, "spec.analysis.match"), weighted_filters, timeouts,
                  [_backend(primary, svc.port, routes.primary), _backend(canary_svc, svc.port, routes.canary)]),
            _rule(matches, copy.deepcopy(filters), timeouts, [_backend(primary, svc.port, 100)]),
        ]
    else:
        aff = sticky(canary, routes)
        weighted = [_backend(primary, svc.port, routes.primary, aff.primary_set_cookie if aff else None),
                    _backend(canary_svc, svc.port, routes.canary, aff.canary_set_cookie if aff else None)]
        rules = [_rule(matches, weighted_filters, timeouts, weighted)]
        if aff is not None:
            rules = _sticky_rules(canary, aff, matches, filters, timeouts) + rules

    spec: dict[str, Any] = {"parentRefs": _parent_refs(canary)}
    if svc.hosts:
        spec["hostnames"] = list(svc.hosts)
    spec["rules"] = rules

    meta = apex_metadata(canary, apex)
    return {"apiVersion": f"{GROUP}/{version}", "kind": "HTTPRoute", "metadata": meta, "spec": spec}


def _is_service(ref: dict, name: str, namespace: str) -> bool:
    return (ref.get("name") == name and (ref.get("kind") or "Service") == "Service"
            and (ref.get("group") or "") == "" and (ref.get("namespace") or namespace) == namespace)


def read_routes(canary: Canary, route: dict) -> Routes | None:
    """The weights of the rule whose two backends are `<svc>-primary` and `<svc>-canary`.

    `mirrored` is True exactly when that rule mirrors to `<svc>-canary`. None when there is no
    such rule (e.g. a foreign HTTPRoute not taken over yet).
    """
    _, primary, canary_svc = _names(canary)
    ns = canary.namespace or (route.get("metadata") or {}).get("namespace") or ""
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if len(refs) != 2:
            continue
        weights: dict[str, int] = {}
        for ref in refs:
            for name in (primary, canary_svc):
                if _is_service(ref, name, ns):
                    weights[name] = int(ref.get("weight", 1))
        if set(weights) != {primary, canary_svc}:
            continue
        mirrored = any(
            f.get("type") == "RequestMirror"
            and _is_service((f.get("requestMirror") or {}).get("backendRef") or {}, canary_svc, ns)
            for f in rule.get("filters") or []
        )
        return Routes(primary=weights[primary], canary=weights[canary_svc], mirrored=mirrored)
    return None


def _parent_key(ref: dict, namespace: str) -> tuple:
    return (ref.get("group", GROUP) or "", ref.get("kind") or "Gateway", ref.get("namespace") or namespace,
            ref.get("name"), ref.get("sectionName"), ref.get("port"))


def _describe_parent(ref: dict) -> str:
    text = f"{ref.get('kind') or 'Gateway'} {ref.get('namespace') + '/' if ref.get('namespace') else ''}" \
           f"{ref.get('name')}"
    if ref.get("sectionName"):
        text += f" (section {ref['sectionName']})"
    return text


def route_status_problem(route: dict) -> str | None:
    """Why the HTTPRoute is not (yet) in effect, from its status.parents; None when it is.

    Each parent the controllers report on (and that the spec still names) must have
    `Accepted=True` observed at the route's current generation. A route no controller reports
    on at all counts as accepted (there may be no status-writing controller).
    """
    meta = route.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    generation = meta.get("generation")
    wanted = {_parent_key(r, namespace) for r in (route.get("spec") or {}).get("parentRefs") or []}
    problems = []
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        if wanted and _parent_key(ref, namespace) not in wanted:
            continue  # a parent the spec no longer names: its controller will drop the entry
        who = _describe_parent(ref)
        accepted = next((c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"), None)
        if accepted is None:
            problems.append(f"{who} has not reported Accepted yet")
            continue
        if accepted.get("status") != "True":
            reason = accepted.get("reason") or "NotAccepted"
            message = accepted.get("message") or ""
            problems.append(f"{who} has not accepted the route ({reason}{': ' + message if message else ''})")
            continue
        observed = accepted.get("observedGeneration")
        if generation is not None and observed is not None and int(observed) < int(generation):
            problems.append(f"{who} has not observed generation {generation} yet (last {observed})")
    if not problems:
        return None
    return f"HTTPRoute {meta.get('name', '?')}: " + "; ".join(problems)
