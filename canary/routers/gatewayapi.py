"""Gateway API router: one HTTPRoute `<svc>` (providers `gatewayapi:v1` and `gatewayapi:v1beta1`).

Shapes follow Flagger's Gateway API router (docs: flagger.md 4.6, docs/routing.md). The pure
builders (`build_httproute`, `read_routes`, `route_status_problem`, in canary/routers/httproute.py,
re-exported here) do no I/O;
`GatewayAPIRouter` compares what they produce with the cluster and writes only on a difference.

```yaml
spec:
  parentRefs: <service.gatewayRefs>            # required
  hostnames: <service.hosts>
  rules:
  - matches: <service.match mapped> or [{path: {type: PathPrefix, value: /}}]
    filters: [RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestMirror..., CORS]
    timeouts: {request: <timeout>, backendRequest: <backendTimeout>}     # v1 only
    backendRefs: [<svc>-primary:<port> weight, <svc>-canary:<port> weight]
```

Every field the Gateway API CRDs default (parentRef group/kind, backendRef group/kind, match
path and match types) is written out, so that what the API server stores equals what we
build and an idle reconcile writes nothing.

* A/B: rule 0 matches analysis.match × service.match and carries the weights (0/100 during
  the run); rule 1 sends the service matches to the primary.
* Mirroring (blue/green with analysis.mirror): a RequestMirror filter to `<svc>-canary` on the
  weighted rule; `read_routes` reports `mirrored` from that filter (mirrorWeight becomes the
  filter's `percent` on v1).
* Session affinity: sticky rules (Cookie header) with a single backend ahead of the weighted
  rule, whose backends add `Set-Cookie` (see `canary.routers.affinity`).
* `v1beta1` has neither rule timeouts nor the CORS filter; they are left out there.

An HTTPRoute that exists but is not ours is taken over (its spec is kept in the annotation
`canary.dev/original-configuration`) and given back by `finalize()`.
"""

from __future__ import annotations

from typing import Callable

from canary.adapters.kube import Kube
from canary.adapters.workload import as_canary, service_name
from canary.models import Canary
from canary.routers import objects
from canary.routers.base import RouterError
from canary.routers.objects import ORIGINAL_ANNOTATION
from canary.routers.httproute import (
    GROUP,
    PLURAL,
    build_httproute,
    map_match,
    read_routes,
    route_status_problem,
)
from canary.types import Routes


# ---- the router ---------------------------------------------------------------------------


Cache = Callable[[str, str, str], "dict | None"]  # (plural, namespace, name) -> object from a watch


class GatewayAPIRouter:
    """Router for `gatewayapi:v1` (v1, or v1beta1 where only that is served) and `gatewayapi:v1beta1`."""

    def __init__(self, kube: Kube, version: str = "v1", cache: Cache | None = None):
        if version not in ("v1", "v1beta1"):
            raise RouterError(f"Gateway API version {version!r} is not supported (v1, v1beta1)")
        self.kube = kube
        self.requested = version
        self._version: str | None = None
        self._cache = cache  # watch cache: saves a GET per tick; stale entries end in 409 + retry

    async def version(self) -> str:
        """The HTTPRoute version to use ("v1" or "v1beta1"), discovered once."""
        if self._version is None:
            candidates = ("v1", "v1beta1") if self.requested == "v1" else ("v1beta1",)
            for v in candidates:
                if await self.kube.served(GROUP, v):
                    self._version = v
                    break
            else:
                raise RouterError(f"the cluster does not serve {GROUP} "
                                  f"{' or '.join(candidates)} (Gateway API CRDs not installed?)")
        return self._version

    async def api_version(self) -> str:
        return f"{GROUP}/{await self.version()}"

    async def _read(self, namespace: str, name: str, fresh: bool) -> dict | None:
        if self._cache is not None and not fresh:
            obj = self._cache(PLURAL, namespace, name)
            if obj is not None:
                return obj
        return await self.kube.get(await self.api_version(), PLURAL, namespace, name)

    # -- Router interface --

    async def reconcile(self, canary: Canary) -> None:
        canary = as_canary(canary)
        version = await self.version()

        def desired(existing: dict | None) -> dict:
            current = read_routes(canary, existing) if existing is not None else None
            return build_httproute(canary, current or Routes(), version)

        await self._upsert(canary, desired)

    async def get_routes(self, canary: Canary) -> Routes | None:
        """None when the HTTPRoute is missing or has no primary/canary rule yet. The weights are
        reported even while a parent has not accepted the route (see `status_problem`)."""
        canary = as_canary(canary)
        route = await self._read(canary.namespace, service_name(canary), fresh=False)
        return None if route is None else read_routes(canary, route)

    async def status_problem(self, canary: Canary) -> str | None:
        """Why the HTTPRoute is not in effect (a parent has not accepted it), or None."""
        canary = as_canary(canary)
        route = await self._read(canary.namespace, service_name(canary), fresh=False)
        return None if route is None else route_status_problem(route)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        canary = as_canary(canary)
        version = await self.version()
        await self._upsert(canary, lambda _existing: build_httproute(canary, routes, version))

    async def finalize(self, canary: Canary) -> None:
        """Restore a taken-over HTTPRoute; ours is garbage collected with the Canary."""
        canary = as_canary(canary)
        api_version = await self.api_version()
        await objects.restore(self.kube, api_version, PLURAL, canary.namespace, service_name(canary))

    # -- I/O helpers --

    async def _upsert(self, canary: Canary, desired_for: Callable[[dict | None], dict]) -> None:
        api_version = await self.api_version()
        name = service_name(canary)

        async def read(fresh: bool) -> dict | None:
            return await self._read(canary.namespace, name, fresh=fresh)

        await objects.upsert(self.kube, canary, api_version, PLURAL, name, read, desired_for)


def make_router(provider: str, kube: Kube, cache: Cache | None = None) -> GatewayAPIRouter:
    """`gatewayapi:v1` or `gatewayapi:v1beta1` (a bare `gatewayapi` means v1)."""
    _, _, version = provider.partition(":")
    return GatewayAPIRouter(kube, version or "v1", cache=cache)


__all__ = ["GatewayAPIRouter", "make_router", "build_httproute", "read_routes", "route_status_problem",
           "map_match", "ORIGINAL_ANNOTATION"]
