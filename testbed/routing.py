"""Pure route resolution for the traffic simulator (no I/O, no clock).

Given an Istio VirtualService or a Gateway API HTTPRoute (as plain dicts, the
way the API server returns them) and a snapshot of Services and Deployments,
work out where synthetic requests go:

1. ``synthesize_requests`` builds the request *classes* the simulator sends for
   a route: a ``matched`` class (a share, 10% by default) carrying header /
   query / path values that satisfy the route's first rule with header or query
   conditions, and a ``default`` class for everything else.
2. ``route_istio`` / ``route_httproute`` pick the rule that serves one request
   and return its backends (weights normalised to fractions) and mirrors.
3. ``resolve`` combines both with the cluster snapshot (host -> Service ->
   selector -> Deployments, split by ready replicas) into ``Leaf`` outcomes with
   a share of the route's traffic each.
4. ``Apportioner`` turns a fractional number of requests per batch into whole
   requests per leaf, carrying remainders so long-run shares are exact.

Semantics follow the upstream APIs where the simulator can observe them:
Istio rules are evaluated in order, the first match wins, regexes are RE2-style
full matches; HTTPRoute matches are ordered by the Gateway API precedence rules
(exact path, longest prefix, method, most headers, most query params, then rule
order). Not modelled: DestinationRule subsets (ignored), ports, authority and
source-label matches (never match: the simulated client has no such
attributes), fault injection, retries and timeouts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

try:  # Python >= 3.11 keeps the regex parser here; sre_parse is deprecated.
    from re import _constants as _sc  # type: ignore[attr-defined]
    from re import _parser as _sp  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older interpreters
    import sre_constants as _sc  # type: ignore[no-redef]
    import sre_parse as _sp  # type: ignore[no-redef]

CLUSTER_SUFFIX = "svc.cluster.local"
KIND_VS = "VirtualService"
KIND_HTTPROUTE = "HTTPRoute"

ANN_ERROR_RATE = "sim.canary.dev/error-rate"
ANN_LATENCY_MS = "sim.canary.dev/latency-ms"
ANN_LATENCY_JITTER = "sim.canary.dev/latency-jitter"
DEFAULT_LATENCY_MS = 10.0
DEFAULT_LATENCY_JITTER = 0.2

# Fixed response codes for requests that never reach a workload.
CODE_NO_ROUTE = 404
CODE_NO_ENDPOINTS = 503


# --------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------


@dataclass
class Request:
    """A synthetic request. Header and query names are lower-case."""

    path: str = "/"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "method": self.method}
        if self.headers:
            out["headers"] = dict(self.headers)
        if self.query:
            out["query"] = dict(self.query)
        return out


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    external: bool = False  # host is not a cluster Service name

    @property
    def fqdn(self) -> str:
        if self.external:
            return self.name
        return f"{self.name}.{self.namespace}.{CLUSTER_SUFFIX}"


@dataclass(frozen=True)
class Backend:
    service: ServiceRef
    fraction: float  # of the requests served by the rule (backends sum to 1)
    invalid: bool = False  # HTTPRoute backendRef that is not a core Service


@dataclass(frozen=True)
class Mirror:
    service: ServiceRef
    fraction: float  # of the requests served by the rule, duplicated


@dataclass
class RuleAction:
    """What happens to one request: which rule served it and where it goes."""

    rule: int | None  # index in http[] / rules[]; None: no rule matched
    backends: list[Backend] = field(default_factory=list)
    mirrors: list[Mirror] = field(default_factory=list)
    status: int | None = None  # fixed response when there is no backend


@dataclass
class TrafficClass:
    name: str  # "matched" or "default"
    share: float
    request: Request


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ready: int
    error_rate: float = 0.0
    latency_ms: float = DEFAULT_LATENCY_MS
    latency_jitter: float = DEFAULT_LATENCY_JITTER  # latency uniform in mean x (1 -+ jitter)

    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Leaf:
    """One outcome of a route: a Service and the workload serving it.

    ``workload`` is None when nothing serves the request; ``code`` then holds
    the fixed response (503 no ready endpoints, 404 no route, ...). When
    ``service`` is None the request never left the router (no rule matched,
    redirect, ...), so it has no destination at all.
    """

    service: ServiceRef | None
    workload: Workload | None
    code: int | None = None

    @property
    def key(self) -> tuple:
        svc = (self.service.namespace, self.service.name) if self.service else None
        wl = self.workload.name if self.workload else None
        return (svc, wl, self.code)

    @property
    def workload_name(self) -> str:
        if self.workload is not None:
            return self.workload.name
        return "unknown" if self.service is not None else "none"


@dataclass
class ClassResult:
    cls: TrafficClass
    action: RuleAction


@dataclass
class Resolution:
    """Everything the simulator needs for one route object."""

    kind: str
    namespace: str
    name: str
    classes: list[ClassResult]
    leaves: dict[tuple, tuple[Leaf, float]]  # key -> (leaf, share of route)
    mirrors: dict[tuple, tuple[Leaf, float]]  # key -> (leaf, share duplicated)

    def workload_shares(self) -> dict[str, float]:
        """Share (0..1) of the route's requests per destination workload."""
        out: dict[str, float] = {}
        for leaf, share in self.leaves.values():
            out[leaf.workload_name] = out.get(leaf.workload_name, 0.0) + share
        return out

    def signature(self) -> tuple:
        """Comparable summary, to log only real changes."""
        return tuple(sorted((k, round(s, 6)) for k, (_, s) in self.leaves.items())) + tuple(
            sorted((("mirror",) + k, round(s, 6)) for k, (_, s) in self.mirrors.items())
        )

    def to_json(self) -> dict[str, Any]:
        def leaf_json(leaf: Leaf, share: float) -> dict[str, Any]:
            return {
                "service": leaf.service.fqdn if leaf.service else None,
                "workload": leaf.workload_name,
                "code": leaf.code,
                "errorRate": leaf.workload.error_rate if leaf.workload else None,
                "latencyMs": leaf.workload.latency_ms if leaf.workload else None,
                "percent": round(share * 100, 4),
            }

        classes = []
        for cr in self.classes:
            classes.append(
                {
                    "name": cr.cls.name,
                    "percent": round(cr.cls.share * 100, 4),
                    "request": cr.cls.request.to_json(),
                    "rule": cr.action.rule,
                    "status": cr.action.status,
                    "backends": [
                        {"service": b.service.fqdn, "weight": round(b.fraction * 100, 4), "invalid": b.invalid}
                        for b in cr.action.backends
                    ],
                    "mirrors": [
                        {"service": m.service.fqdn, "percent": round(m.fraction * 100, 4)} for m in cr.action.mirrors
                    ],
                }
            )
        workloads = {k: round(v * 100, 4) for k, v in sorted(self.workload_shares().items())}
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "workloads": workloads,
            "split": [leaf_json(leaf, s) for leaf, s in self.leaves.values()],
            "mirrors": [leaf_json(leaf, s) for leaf, s in self.mirrors.values()],
            "classes": classes,
        }


# --------------------------------------------------------------------------
# Regex example generation
# --------------------------------------------------------------------------


class _Unsupported(Exception):
    pass


_CANDIDATE_CHARS = "a0xZ_-.=;/ ~"


def _category_has(cat: Any, ch: str) -> bool:
    if cat is _sc.CATEGORY_DIGIT:
        return ch.isdigit()
    if cat is _sc.CATEGORY_NOT_DIGIT:
        return not ch.isdigit()
    if cat is _sc.CATEGORY_WORD:
        return ch.isalnum() or ch == "_"
    if cat is _sc.CATEGORY_NOT_WORD:
        return not (ch.isalnum() or ch == "_")
    if cat is _sc.CATEGORY_SPACE:
        return ch.isspace()
    if cat is _sc.CATEGORY_NOT_SPACE:
        return not ch.isspace()
    raise _Unsupported(cat)


def _set_has(items: list, ch: str) -> bool:
    negate = False
    hit = False
    for op, av in items:
        if op is _sc.NEGATE:
            negate = True
        elif op is _sc.LITERAL:
            hit = hit or ord(ch) == av
        elif op is _sc.RANGE:
            hit = hit or av[0] <= ord(ch) <= av[1]
        elif op is _sc.CATEGORY:
            hit = hit or _category_has(av, ch)
        else:
            raise _Unsupported(op)
    return hit != negate


def _pick_from_set(items: list) -> str:
    candidates: list[str] = []
    for op, av in items:
        if op is _sc.LITERAL:
            candidates.append(chr(av))
        elif op is _sc.RANGE:
            candidates.append(chr(av[0]))
    candidates.extend(_CANDIDATE_CHARS)
    for ch in candidates:
        if _set_has(items, ch):
            return ch
    raise _Unsupported("no candidate character in set")


def _gen(items: Iterable) -> str:
    out: list[str] = []
    for op, av in items:
        if op is _sc.LITERAL:
            out.append(chr(av))
        elif op is _sc.NOT_LITERAL:
            out.append("a" if av != ord("a") else "b")
        elif op is _sc.ANY:
            out.append("a")
        elif op is _sc.IN:
            out.append(_pick_from_set(av))
        elif op in (_sc.MAX_REPEAT, _sc.MIN_REPEAT) or op is getattr(_sc, "POSSESSIVE_REPEAT", None):
            lo, _hi, sub = av
            out.append(_gen(sub) * lo)
        elif op is _sc.SUBPATTERN:
            out.append(_gen(av[-1]))
        elif op is getattr(_sc, "ATOMIC_GROUP", None):
            out.append(_gen(av))
        elif op is _sc.BRANCH:
            out.append(_gen(av[1][0]))
        elif op is _sc.AT:
            continue  # anchors and word boundaries: checked by the final match
        elif op in (_sc.ASSERT, _sc.ASSERT_NOT):
            continue  # look-arounds: checked by the final match
        else:
            raise _Unsupported(op)
    return "".join(out)


def example_for_regex(pattern: str) -> str | None:
    """A short string that fully matches ``pattern``, or None if we can't find one.

    Builds the shortest-looking candidate from the parsed pattern (minimum
    repetitions, first alternative, first character of a class) and only
    returns it if ``re.fullmatch`` confirms it.
    """
    try:
        compiled = re.compile(pattern)
        candidate = _gen(_sp.parse(pattern))
    except (re.error, _Unsupported, RecursionError, ValueError, TypeError):
        return None
    if compiled.fullmatch(candidate):
        return candidate
    return None


def regex_full_match(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False


# --------------------------------------------------------------------------
# Istio StringMatch helpers
# --------------------------------------------------------------------------


def istio_string_match(sm: Any, value: str | None, ignore_case: bool = False) -> bool:
    """Istio StringMatch (exact | prefix | regex). An empty match means presence."""
    if value is None:
        return False
    if not isinstance(sm, Mapping) or not sm:
        return True
    if ignore_case:
        value = value.lower()
    if "exact" in sm:
        want = str(sm["exact"])
        return value == (want.lower() if ignore_case else want)
    if "prefix" in sm:
        want = str(sm["prefix"])
        return value.startswith(want.lower() if ignore_case else want)
    if "regex" in sm:
        return regex_full_match(str(sm["regex"]), value)
    return True


def istio_string_example(sm: Any) -> str | None:
    if not isinstance(sm, Mapping) or not sm:
        return "1"  # presence only
    if "exact" in sm:
        return str(sm["exact"])
    if "prefix" in sm:
        return str(sm["prefix"]) or "1"
    if "regex" in sm:
        return example_for_regex(str(sm["regex"]))
    return "1"


# --------------------------------------------------------------------------
# Hosts
# --------------------------------------------------------------------------


def resolve_host(host: str, namespace: str) -> ServiceRef:
    """Istio destination host -> Service reference.

    ``name`` is relative to the route's namespace; ``name.ns``, ``name.ns.svc``
    and ``name.ns.svc.cluster.local`` name a Service in ``ns``. Anything else
    is an external host.
    """
    host = (host or "").strip().rstrip(".").lower()
    parts = host.split(".")
    if len(parts) == 1 and parts[0]:
        return ServiceRef(namespace, parts[0])
    if len(parts) == 2:
        return ServiceRef(parts[1], parts[0])
    if len(parts) == 3 and parts[2] == "svc":
        return ServiceRef(parts[1], parts[0])
    if len(parts) == 5 and ".".join(parts[2:]) == CLUSTER_SUFFIX:
        return ServiceRef(parts[1], parts[0])
    return ServiceRef(namespace, host, external=True)


# --------------------------------------------------------------------------
# Istio VirtualService
# --------------------------------------------------------------------------

_ISTIO_IGNORED_MATCH_KEYS = {"name", "statPrefix", "ignoreUriCase"}


def _istio_condition_matches(cond: Mapping, req: Request, namespace: str) -> bool:
    ignore_case = bool(cond.get("ignoreUriCase"))
    for key, val in cond.items():
        if key in _ISTIO_IGNORED_MATCH_KEYS:
            continue
        if key == "uri":
            if not istio_string_match(val, req.path, ignore_case):
                return False
        elif key == "method":
            if not istio_string_match(val, req.method):
                return False
        elif key == "scheme":
            if not istio_string_match(val, "http"):
                return False
        elif key == "headers":
            for name, sm in (val or {}).items():
                if not istio_string_match(sm, req.headers.get(str(name).lower())):
                    return False
        elif key == "withoutHeaders":
            for name, sm in (val or {}).items():
                if istio_string_match(sm, req.headers.get(str(name).lower())):
                    return False
        elif key == "queryParams":
            for name, sm in (val or {}).items():
                if not istio_string_match(sm, req.query.get(str(name).lower())):
                    return False
        elif key == "gateways":
            if val and "mesh" not in val:
                return False
        elif key == "sourceNamespace":
            if val and val != namespace:
                return False
        else:
            # authority, port, sourceLabels, ...: the simulated client has none
            return False
    return True


def _istio_rule_matches(rule: Mapping, req: Request, namespace: str) -> bool:
    conds = rule.get("match") or []
    if not conds:
        return True
    return any(_istio_condition_matches(c or {}, req, namespace) for c in conds)


def _percent(value: Any, default: float = 100.0) -> float:
    """Istio Percent ({value: 12.5}) or a bare number, as a fraction 0..1."""
    if value is None:
        return default / 100.0
    if isinstance(value, Mapping):
        value = value.get("value", 0.0)
    try:
        return min(max(float(value), 0.0), 100.0) / 100.0
    except (TypeError, ValueError):
        return 0.0


def _istio_mirrors(rule: Mapping, namespace: str) -> list[Mirror]:
    mirrors: list[Mirror] = []
    m = rule.get("mirror")
    if isinstance(m, Mapping) and m.get("host"):
        if "mirrorPercentage" in rule:
            frac = _percent(rule.get("mirrorPercentage"))
        elif "mirrorPercent" in rule or "mirror_percent" in rule:
            frac = _percent(rule.get("mirrorPercent", rule.get("mirror_percent")))
        else:
            frac = 1.0
        if frac > 0:
            mirrors.append(Mirror(resolve_host(str(m["host"]), namespace), frac))
    for entry in rule.get("mirrors") or []:
        dest = (entry or {}).get("destination") or {}
        if dest.get("host"):
            frac = _percent(entry.get("percentage"))
            if frac > 0:
                mirrors.append(Mirror(resolve_host(str(dest["host"]), namespace), frac))
    return mirrors


def istio_backends(rule: Mapping, namespace: str) -> list[Backend]:
    routes = [r for r in (rule.get("route") or []) if isinstance(r, Mapping)]
    if not routes:
        return []
    if len(routes) == 1:
        weights = [1.0]
    else:
        weights = [max(float(r.get("weight") or 0), 0.0) for r in routes]
    total = sum(weights)
    if total <= 0:
        return []
    out = []
    for r, w in zip(routes, weights):
        host = ((r.get("destination") or {}).get("host")) or ""
        out.append(Backend(resolve_host(str(host), namespace), w / total))
    return out


def route_istio(spec: Mapping, namespace: str, req: Request) -> RuleAction:
    """The first http[] rule that matches ``req`` decides."""
    for idx, rule in enumerate(spec.get("http") or []):
        if not isinstance(rule, Mapping) or not _istio_rule_matches(rule, req, namespace):
            continue
        if rule.get("redirect"):
            return RuleAction(idx, status=int(rule["redirect"].get("redirectCode") or 301))
        if rule.get("directResponse"):
            return RuleAction(idx, status=int(rule["directResponse"].get("status") or 200))
        backends = istio_backends(rule, namespace)
        mirrors = _istio_mirrors(rule, namespace)
        if not backends:
            return RuleAction(idx, mirrors=mirrors, status=CODE_NO_ENDPOINTS)
        return RuleAction(idx, backends=backends, mirrors=mirrors)
    return RuleAction(None, status=CODE_NO_ROUTE)


def _istio_condition_example(cond: Mapping, base: Request) -> Request | None:
    """A request satisfying ``cond`` (None if some part can't be satisfied)."""
    req = Request(path=base.path, method=base.method, headers=dict(base.headers), query=dict(base.query))
    for name, sm in (cond.get("headers") or {}).items():
        v = istio_string_example(sm)
        if v is None:
            return None
        req.headers[str(name).lower()] = v
    for name, sm in (cond.get("queryParams") or {}).items():
        v = istio_string_example(sm)
        if v is None:
            return None
        req.query[str(name).lower()] = v
    for name in (cond.get("withoutHeaders") or {}):
        req.headers.pop(str(name).lower(), None)
    if "uri" in cond:
        v = istio_string_example(cond["uri"])
        if v is None:
            return None
        req.path = v if v.startswith("/") or cond["uri"].get("regex") else "/" + v
    if "method" in cond:
        v = istio_string_example(cond["method"])
        if v is None:
            return None
        req.method = v
    return req


def _istio_requests(spec: Mapping, namespace: str = "") -> tuple[Request, Request | None]:
    """(default request, matched request or None) for a VirtualService spec."""
    rules = [r for r in (spec.get("http") or []) if isinstance(r, Mapping)]
    base = Request()
    # default class: satisfy the uri of the first condition without header or
    # query requirements, so a catch-all like `uri: {prefix: /api}` still
    # receives traffic; a rule without match takes anything, "/" included
    for rule in rules:
        conds = [c or {} for c in rule.get("match") or []]
        if not conds:
            break
        plain = [c for c in conds if not (c.get("headers") or c.get("queryParams"))]
        if plain:
            if "uri" in plain[0]:
                v = istio_string_example(plain[0]["uri"])
                if v is not None:
                    base.path = v if v.startswith("/") else "/" + v
            break
    # matched class: the first rule with header/query conditions
    for rule in rules:
        conds = [c or {} for c in rule.get("match") or []]
        keyed = [c for c in conds if c.get("headers") or c.get("queryParams")]
        if not keyed:
            continue
        for cond in keyed:
            req = _istio_condition_example(cond, base)
            if req is not None and _istio_condition_matches(cond, req, namespace):
                return base, req
        return base, None  # its conditions can't be satisfied: no matched class
    return base, None


# --------------------------------------------------------------------------
# Gateway API HTTPRoute
# --------------------------------------------------------------------------


def _gw_path_matches(path_match: Mapping | None, path: str) -> bool:
    pm = path_match or {}
    ptype = pm.get("type") or "PathPrefix"
    value = pm.get("value")
    if value is None:
        value = "/"
    if ptype == "Exact":
        return path == value
    if ptype == "RegularExpression":
        return regex_full_match(str(value), path)
    if ptype == "PathPrefix":
        prefix = str(value).rstrip("/")
        if not prefix:
            return True
        return path == prefix or path.startswith(prefix + "/")
    return False


def _gw_value_matches(m: Mapping, value: str | None) -> bool:
    if value is None:
        return False
    mtype = m.get("type") or "Exact"
    if mtype == "Exact":
        return value == str(m.get("value", ""))
    if mtype == "RegularExpression":
        return regex_full_match(str(m.get("value", "")), value)
    return False


def _gw_match_matches(m: Mapping, req: Request) -> bool:
    if not _gw_path_matches(m.get("path"), req.path):
        return False
    if m.get("method") and str(m["method"]).upper() != req.method.upper():
        return False
    for h in m.get("headers") or []:
        if not _gw_value_matches(h, req.headers.get(str(h.get("name", "")).lower())):
            return False
    for q in m.get("queryParams") or []:
        if not _gw_value_matches(q, req.query.get(str(q.get("name", "")).lower())):
            return False
    return True


_DEFAULT_GW_MATCH: Mapping = {"path": {"type": "PathPrefix", "value": "/"}}


def _gw_precedence(m: Mapping) -> tuple:
    pm = m.get("path") or {}
    ptype = pm.get("type") or "PathPrefix"
    value = str(pm.get("value") if pm.get("value") is not None else "/")
    rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}.get(ptype, 3)
    return (
        rank,
        -len(value),
        0 if m.get("method") else 1,
        -len(m.get("headers") or []),
        -len(m.get("queryParams") or []),
    )


def _gw_ordered_matches(spec: Mapping) -> list[tuple[int, Mapping]]:
    entries = []
    for ridx, rule in enumerate(spec.get("rules") or []):
        if not isinstance(rule, Mapping):
            continue
        matches = rule.get("matches") or [_DEFAULT_GW_MATCH]
        for midx, m in enumerate(matches):
            m = m or _DEFAULT_GW_MATCH
            entries.append((_gw_precedence(m), ridx, midx, m))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [(ridx, m) for _, ridx, _, m in entries]


def _gw_ref_service(ref: Mapping, namespace: str) -> tuple[ServiceRef, bool]:
    kind = ref.get("kind") or "Service"
    group = ref.get("group") or ""
    ns = ref.get("namespace") or namespace
    svc = ServiceRef(str(ns), str(ref.get("name") or ""))
    valid = kind == "Service" and group in ("", "core") and bool(svc.name)
    return svc, not valid


def _gw_fraction(mirror: Mapping) -> float:
    if mirror.get("percent") is not None:
        return _percent(mirror.get("percent"))
    frac = mirror.get("fraction")
    if isinstance(frac, Mapping):
        try:
            num = float(frac.get("numerator", 0))
            den = float(frac.get("denominator") or 100)
            return min(max(num / den, 0.0), 1.0) if den > 0 else 0.0
        except (TypeError, ValueError):
            return 0.0
    return 1.0


def httproute_action(rule: Mapping, idx: int, namespace: str) -> RuleAction:
    mirrors: list[Mirror] = []
    redirect = False
    for f in rule.get("filters") or []:
        ftype = (f or {}).get("type")
        if ftype == "RequestMirror":
            rm = f.get("requestMirror") or {}
            ref = rm.get("backendRef") or {}
            svc, invalid = _gw_ref_service(ref, namespace)
            frac = _gw_fraction(rm)
            if not invalid and frac > 0:
                mirrors.append(Mirror(svc, frac))
        elif ftype == "RequestRedirect":
            redirect = True
    if redirect:
        code = 302
        for f in rule.get("filters") or []:
            if (f or {}).get("type") == "RequestRedirect":
                code = int((f.get("requestRedirect") or {}).get("statusCode") or 302)
        return RuleAction(idx, mirrors=mirrors, status=code)
    refs = [r for r in (rule.get("backendRefs") or []) if isinstance(r, Mapping)]
    weights = []
    for r in refs:
        w = r.get("weight")
        weights.append(1.0 if w is None else max(float(w), 0.0))
    total = sum(weights)
    if not refs or total <= 0:
        # Gateway API: all backends invalid / zero weight -> 500
        return RuleAction(idx, mirrors=mirrors, status=500)
    backends = []
    for r, w in zip(refs, weights):
        if w <= 0:
            continue
        svc, invalid = _gw_ref_service(r, namespace)
        backends.append(Backend(svc, w / total, invalid=invalid))
    return RuleAction(idx, backends=backends, mirrors=mirrors)


def route_httproute(spec: Mapping, namespace: str, req: Request) -> RuleAction:
    rules = spec.get("rules") or []
    for ridx, m in _gw_ordered_matches(spec):
        if _gw_match_matches(m, req):
            return httproute_action(rules[ridx], ridx, namespace)
    return RuleAction(None, status=CODE_NO_ROUTE)


def _gw_value_example(m: Mapping) -> str | None:
    mtype = m.get("type") or "Exact"
    if mtype == "Exact":
        return str(m.get("value", ""))
    if mtype == "RegularExpression":
        return example_for_regex(str(m.get("value", "")))
    return None


def _gw_path_example(pm: Mapping | None) -> str | None:
    pm = pm or {}
    ptype = pm.get("type") or "PathPrefix"
    value = pm.get("value")
    value = "/" if value is None else str(value)
    if ptype in ("Exact", "PathPrefix"):
        return value or "/"
    if ptype == "RegularExpression":
        return example_for_regex(value)
    return None


def _httproute_requests(spec: Mapping) -> tuple[Request, Request | None]:
    base = Request()
    matches = _gw_ordered_matches(spec)
    # default class: the path of the most general match without headers/query
    plain = [m for _, m in matches if not m.get("headers") and not m.get("queryParams")]
    if plain:
        p = _gw_path_example(plain[-1].get("path"))
        if p is not None:
            base.path = p
        if plain[-1].get("method"):
            base.method = str(plain[-1]["method"]).upper()
    # matched class: the first rule (in list order) with header/query matches
    for rule in spec.get("rules") or []:
        cands = [m for m in (rule or {}).get("matches") or [] if m and (m.get("headers") or m.get("queryParams"))]
        if not cands:
            continue
        for m in cands:
            req = Request(path=base.path, method=base.method)
            ok = True
            for h in m.get("headers") or []:
                v = _gw_value_example(h)
                if v is None:
                    ok = False
                    break
                req.headers[str(h.get("name", "")).lower()] = v
            for q in (m.get("queryParams") or []) if ok else []:
                v = _gw_value_example(q)
                if v is None:
                    ok = False
                    break
                req.query[str(q.get("name", "")).lower()] = v
            if ok and m.get("path"):
                p = _gw_path_example(m.get("path"))
                ok = p is not None
                if ok:
                    req.path = p  # type: ignore[assignment]
            if ok and m.get("method"):
                req.method = str(m["method"]).upper()
            if ok and _gw_match_matches(m, req):
                return base, req
        return base, None
    return base, None


# --------------------------------------------------------------------------
# Requests per route
# --------------------------------------------------------------------------


def synthesize_requests(
    kind: str, spec: Mapping, header_share: float = 0.1, namespace: str = ""
) -> list[TrafficClass]:
    """The request classes sent to one route object, with their shares."""
    if kind == KIND_VS:
        base, matched = _istio_requests(spec, namespace)
    elif kind == KIND_HTTPROUTE:
        base, matched = _httproute_requests(spec)
    else:
        raise ValueError(f"unknown route kind {kind!r}")
    header_share = min(max(header_share, 0.0), 1.0)
    if matched is None or header_share <= 0:
        return [TrafficClass("default", 1.0, base)]
    if header_share >= 1:
        return [TrafficClass("matched", 1.0, matched)]
    return [TrafficClass("matched", header_share, matched), TrafficClass("default", 1.0 - header_share, base)]


def route_request(kind: str, spec: Mapping, namespace: str, req: Request) -> RuleAction:
    if kind == KIND_VS:
        return route_istio(spec, namespace, req)
    return route_httproute(spec, namespace, req)


# --------------------------------------------------------------------------
# Cluster snapshot: Services and Deployments
# --------------------------------------------------------------------------


def _float_annotation(annotations: Mapping, key: str, default: float, lo: float, hi: float) -> float:
    raw = annotations.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        v = float(str(raw).strip().rstrip("%"))
    except ValueError:
        return default
    if math.isnan(v):
        return default
    return min(max(v, lo), hi)


def workload_from_deployment(dep: Mapping) -> Workload:
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    tmeta = ((spec.get("template") or {}).get("metadata")) or {}
    ann = tmeta.get("annotations") or {}
    status = dep.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    return Workload(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        labels=dict(tmeta.get("labels") or {}),
        ready=ready,
        error_rate=_float_annotation(ann, ANN_ERROR_RATE, 0.0, 0.0, 1.0),
        latency_ms=_float_annotation(ann, ANN_LATENCY_MS, DEFAULT_LATENCY_MS, 0.0, 3_600_000.0),
        latency_jitter=_float_annotation(ann, ANN_LATENCY_JITTER, DEFAULT_LATENCY_JITTER, 0.0, 1.0),
    )


@dataclass
class World:
    """Snapshot of Services (selectors) and Deployments (as workloads)."""

    services: dict[tuple[str, str], Mapping[str, str] | None] = field(default_factory=dict)
    workloads: dict[str, list[Workload]] = field(default_factory=dict)  # by namespace
    # (namespace, label, value) -> workloads with that pod label, built on first use: a Service's
    # endpoints are found without a scan of its namespace (1,000 Deployments in one namespace)
    _by_label: dict[tuple[str, str, str], list[Workload]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_objects(cls, services: Iterable[Mapping], deployments: Iterable[Mapping]) -> "World":
        w = cls()
        for svc in services:
            meta = svc.get("metadata") or {}
            spec = svc.get("spec") or {}
            key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
            if spec.get("type") == "ExternalName":
                w.services[key] = None
            else:
                w.services[key] = dict(spec.get("selector") or {}) or None
        for dep in deployments:
            wl = workload_from_deployment(dep)
            w.workloads.setdefault(wl.namespace, []).append(wl)
        for lst in w.workloads.values():
            lst.sort(key=lambda x: x.name)
        return w

    def has_service(self, ref: ServiceRef) -> bool:
        return not ref.external and (ref.namespace, ref.name) in self.services

    def endpoints(self, ref: ServiceRef) -> list[tuple[Workload, float]]:
        """Deployments behind a Service, weighted by ready replicas."""
        if ref.external:
            return []
        selector = self.services.get((ref.namespace, ref.name))
        if not selector:
            return []
        if self._by_label is None:
            index: dict[tuple[str, str, str], list[Workload]] = {}
            for ns, lst in self.workloads.items():
                for wl in lst:
                    for k, v in wl.labels.items():
                        index.setdefault((ns, k, v), []).append(wl)
            self._by_label = index
        k0, v0 = min(selector.items())
        chosen = []
        for wl in self._by_label.get((ref.namespace, k0, v0), []):
            if wl.ready > 0 and all(wl.labels.get(k) == v for k, v in selector.items()):
                chosen.append(wl)
        total = sum(wl.ready for wl in chosen)
        return [(wl, wl.ready / total) for wl in chosen] if total else []


def _service_leaves(world: World, svc: ServiceRef, missing_code: int) -> list[tuple[Leaf, float]]:
    if not world.has_service(svc):
        return [(Leaf(svc, None, missing_code), 1.0)]
    eps = world.endpoints(svc)
    if not eps:
        return [(Leaf(svc, None, CODE_NO_ENDPOINTS), 1.0)]
    return [(Leaf(svc, wl), frac) for wl, frac in eps]


def _add(acc: dict[tuple, tuple[Leaf, float]], leaf: Leaf, share: float) -> None:
    if share <= 0:
        return
    if leaf.key in acc:
        acc[leaf.key] = (leaf, acc[leaf.key][1] + share)
    else:
        acc[leaf.key] = (leaf, share)


def resolve(
    kind: str, namespace: str, name: str, spec: Mapping, world: World, header_share: float = 0.1
) -> Resolution:
    """Resolve a route object against the cluster snapshot."""
    classes = []
    leaves: dict[tuple, tuple[Leaf, float]] = {}
    mirrors: dict[tuple, tuple[Leaf, float]] = {}
    missing_code = 500 if kind == KIND_HTTPROUTE else CODE_NO_ENDPOINTS
    for cls in synthesize_requests(kind, spec, header_share, namespace):
        action = route_request(kind, spec, namespace, cls.request)
        classes.append(ClassResult(cls, action))
        if action.status is not None and not action.backends:
            _add(leaves, Leaf(None, None, action.status), cls.share)
        for b in action.backends:
            if b.invalid:
                _add(leaves, Leaf(b.service, None, 500), cls.share * b.fraction)
                continue
            for leaf, frac in _service_leaves(world, b.service, missing_code):
                _add(leaves, leaf, cls.share * b.fraction * frac)
        for m in action.mirrors:
            for leaf, frac in _service_leaves(world, m.service, missing_code):
                if leaf.workload is not None:  # nothing answers a mirror without endpoints
                    _add(mirrors, leaf, cls.share * m.fraction * frac)
    return Resolution(kind, namespace, name, classes, leaves, mirrors)


# --------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------


class Apportioner:
    """Splits a fractional request count into whole requests per key.

    Remainders carry over between calls, so over many batches every key gets
    exactly its share (largest error: one request). Keys that disappear from
    ``shares`` lose their carry.
    """

    def __init__(self) -> None:
        self.carry: dict[Any, float] = {}

    def split(self, total: float, shares: Mapping[Any, float]) -> dict[Any, int]:
        out: dict[Any, int] = {}
        carry: dict[Any, float] = {}
        for key, share in shares.items():
            x = self.carry.get(key, 0.0) + total * share
            n = int(math.floor(x + 1e-9))
            carry[key] = x - n
            out[key] = n
        self.carry = carry
        return out
