"""Session affinity (analysis.sessionAffinity): which cookies a route issues and matches.

Shared by the Istio and the Gateway API routers; pure, no I/O.

While the canary takes a share of the traffic (canary strategy, canary weight > 0):

* responses from the canary carry `Set-Cookie: <cookieName>=<value>; Max-Age=<maxAge>...`,
* a sticky rule ahead of the weighted one sends requests carrying that cookie to the canary,
* with `primaryCookieName`, responses from the primary carry `<primaryCookieName>=<value>` with
  Max-Age = the analysis interval, and a second sticky rule keeps those users on the primary
  for one interval (then they are re-balanced by the weights).

Once the canary weight is back to 0 after a run, a rule matches the run's canary cookie,
routes it to the primary and expires it (`Max-Age=-1`).

Cookie values: the router never draws random numbers (a route must be the same for the same
inputs, or every reconcile would rewrite it). A value already recorded in the status
(`status.sessionAffinityCookie`, `primarySessionAffinityCookie`, `previousSessionAffinityCookie`,
stored as `name=value` as Flagger does) is used as is. Otherwise the value is derived: the first
10 letters (a-z) of sha256(`<uid>/<revision>/<role>`), where uid is the Canary's uid and revision
is `status.lastAppliedSpec`, the revision under analysis. Each run of each Canary therefore gets
its own cookies, stable over the whole run and across operator restarts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from canary.models import Canary
from canary.routers.base import RouterError
from canary.types import Routes

EXPIRED_MAX_AGE = -1
_NO_RUN_PHASES = ("", "Initializing", "Initialized")
_REGEX_SPECIALS = set(r".^$*+?()[]{}|\/")


@dataclass(frozen=True)
class Sticky:
    """The cookie rules a route needs right now (all cookies are `name=value`)."""

    canary_cookie: str | None = None  # match -> canary; Set-Cookie on canary responses
    canary_set_cookie: str | None = None
    primary_cookie: str | None = None  # match -> primary; Set-Cookie on primary responses
    primary_set_cookie: str | None = None
    expired_cookie: str | None = None  # match -> primary, with Set-Cookie expiring it
    expire_set_cookie: str | None = None


def cookie_value(uid: str, revision: str, role: str) -> str:
    """10 letters a-z, a pure function of (uid, revision, role)."""
    digest = hashlib.sha256(f"{uid}/{revision}/{role}".encode()).digest()
    return "".join(chr(ord("a") + b % 26) for b in digest[:10])


def _named(name: str, stored: str | None, derived: str) -> str:
    if stored:
        return stored if "=" in stored else f"{name}={stored}"
    return f"{name}={derived}"


def set_cookie_header(cookie: str, max_age: int, canary: Canary) -> str:
    """A Set-Cookie value for `name=value` with the attributes of analysis.sessionAffinity."""
    sa = canary.spec.analysis.session_affinity  # type: ignore[union-attr]
    parts = [cookie, f"Max-Age={max_age}"]
    if sa.domain:
        parts.append(f"Domain={sa.domain}")
    if sa.path:
        parts.append(f"Path={sa.path}")
    if sa.http_only:
        parts.append("HttpOnly")
    if sa.secure:
        parts.append("Secure")
    if sa.same_site:
        parts.append(f"SameSite={sa.same_site}")
    if sa.partitioned:
        parts.append("Partitioned")
    return "; ".join(parts)


def cookie_regex(cookie: str) -> str:
    """An RE2 full-match pattern for a Cookie header that contains `name=value` as one cookie."""
    escaped = "".join("\\" + c if c in _REGEX_SPECIALS else c for c in cookie)
    return rf"^(.*?;)?\s*{escaped}(;.*)?$"


def sticky(canary: Canary, routes: Routes) -> Sticky | None:
    """The cookie rules for `routes`; None when session affinity is off or does not apply.

    Applies to the canary (weights) strategy only: A/B and Blue/Green do not split users by weight.
    """
    analysis = canary.spec.analysis
    sa = analysis.session_affinity if analysis is not None else None
    if sa is None or analysis.strategy != "canary":
        return None
    if sa.primary_cookie_name and sa.primary_cookie_name == sa.cookie_name:
        raise RouterError(f"canary {canary.name}: analysis.sessionAffinity.primaryCookieName must differ "
                          "from cookieName")
    status = canary.status
    uid = str(canary.metadata.get("uid") or f"{canary.namespace}/{canary.name}")
    revision = (status.last_applied_spec if status else None) or ""
    if routes.canary > 0:
        cookie = _named(sa.cookie_name, status.session_affinity_cookie if status else None,
                        cookie_value(uid, revision, "canary"))
        out = Sticky(canary_cookie=cookie, canary_set_cookie=set_cookie_header(cookie, sa.max_age_value, canary))
        if sa.primary_cookie_name:
            primary = _named(sa.primary_cookie_name, status.primary_session_affinity_cookie if status else None,
                             cookie_value(uid, revision, "primary"))
            interval = max(1, int(analysis.interval_seconds))
            out = replace(out, primary_cookie=primary,
                          primary_set_cookie=set_cookie_header(primary, interval, canary))
        return out
    # weight 0: expire the cookie of the last run, if there was one
    previous = None
    if status is not None:
        stored = status.previous_session_affinity_cookie or status.session_affinity_cookie
        if stored:
            previous = _named(sa.cookie_name, stored, "")
        elif revision and status.phase.value not in _NO_RUN_PHASES:
            previous = f"{sa.cookie_name}={cookie_value(uid, revision, 'canary')}"
    if not previous:
        return Sticky()
    return Sticky(expired_cookie=previous,
                  expire_set_cookie=set_cookie_header(previous, EXPIRED_MAX_AGE, canary))


__all__ = ["Sticky", "sticky", "cookie_value", "cookie_regex", "set_cookie_header"]
