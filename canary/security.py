"""The operator's security options: the egress policy and cross-namespace references.

`canary operator` flags (docs/security.md):

--no-cross-namespace-refs      refuse MetricTemplate and AlertProvider references to another
                               namespace (Flagger's -no-cross-namespace-refs); off by default for
                               Flagger compatibility, recommended on a shared cluster
--egress-deny-cidr CIDR        refuse outbound calls (webhooks, metrics, alerts) to these
--egress-allow-cidr CIDR       addresses / allow only these (with the allow lists set, nothing
--egress-deny-host HOST        else is reachable); `.example.com` covers the subdomains
--egress-allow-host HOST
--egress-no-defaults           drop the default denials (link-local, cloud metadata)

`configure(policy)` is called once at operator start; `refusal(canary)` is what the reconciler
asks before any action (a Valid=False condition and a Warning event when it answers).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from canary.adapters import http
from canary.adapters.http import Egress

__all__ = ["Policy", "add_arguments", "configure", "cross_namespace_refs", "current", "from_args", "refusal"]


@dataclass(frozen=True)
class Policy:
    no_cross_namespace_refs: bool = False
    egress: Egress = field(default_factory=Egress)


_current = Policy()


def current() -> Policy:
    return _current


def configure(policy: Policy) -> None:
    """Make `policy` the operator's (the egress policy becomes the HTTP layer's default)."""
    global _current
    _current = policy
    http.configure(policy.egress)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cross-namespace-refs", action="store_true",
                        help="refuse MetricTemplate and AlertProvider references to another namespace")
    parser.add_argument("--egress-deny-cidr", action="append", default=[], metavar="CIDR",
                        help="refuse outbound calls to these addresses (repeatable)")
    parser.add_argument("--egress-allow-cidr", action="append", default=[], metavar="CIDR",
                        help="allow outbound calls only to these addresses and the allowed hosts (repeatable)")
    parser.add_argument("--egress-deny-host", action="append", default=[], metavar="HOST",
                        help="refuse outbound calls to this host; .example.com covers subdomains (repeatable)")
    parser.add_argument("--egress-allow-host", action="append", default=[], metavar="HOST",
                        help="allow outbound calls to this host (repeatable)")
    parser.add_argument("--egress-no-defaults", action="store_true",
                        help="do not refuse link-local and cloud metadata addresses by default")


def from_args(args: Any) -> Policy:
    try:
        egress = Egress.build(deny_cidrs=args.egress_deny_cidr, allow_cidrs=args.egress_allow_cidr,
                              deny_hosts=args.egress_deny_host, allow_hosts=args.egress_allow_host,
                              defaults=not args.egress_no_defaults)
    except ValueError as exc:
        raise SystemExit(f"canary operator: invalid egress option: {exc}") from exc
    return Policy(no_cross_namespace_refs=bool(args.no_cross_namespace_refs), egress=egress)


def cross_namespace_refs(canary: Any) -> list[str]:
    """The MetricTemplate and AlertProvider references of `canary` to another namespace."""
    ns = canary.namespace
    analysis = canary.spec.analysis
    out: list[str] = []
    for metric in (analysis.metrics or []) if analysis else []:
        ref = metric.template_ref
        if ref is not None and ref.namespace and ref.namespace != ns:
            out.append(f"metric {metric.name}: MetricTemplate {ref.namespace}/{ref.name}")
    for alert in (analysis.alerts or []) if analysis else []:
        ref = alert.provider_ref
        if ref.namespace and ref.namespace != ns:
            out.append(f"alert {alert.name}: AlertProvider {ref.namespace}/{ref.name}")
    return out


def refusal(canary: Any, policy: Policy | None = None) -> str | None:
    """Why the operator's policy refuses `canary` as written; None when it does not."""
    policy = policy or _current
    if policy.no_cross_namespace_refs:
        refs = cross_namespace_refs(canary)
        if refs:
            return ("cross-namespace references are disabled on this operator (--no-cross-namespace-refs): "
                    + "; ".join(refs[:5]) + f"; use a MetricTemplate or AlertProvider in {canary.namespace}")
    return None
