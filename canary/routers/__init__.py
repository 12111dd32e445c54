"""Traffic routers, one per provider, all implementing `canary.routers.base.Router`."""

from __future__ import annotations

from canary.adapters.kube import Kube
from canary.routers.base import Router, RouterError

DEFAULT_PROVIDER = "istio"


def make_router(provider: str | None, kube: Kube, cache=None) -> Router:
    """The router for a Canary's `spec.provider` (None or "" means the operator default, istio).

    `gatewayapi:v1` / `gatewayapi:v1beta1` use `canary.routers.gatewayapi.make_router(provider, kube)`
    when that module is present. Other Flagger providers are not implemented and raise RouterError.
    """
    provider = provider or DEFAULT_PROVIDER
    if provider == "istio":
        from canary.routers.istio import IstioRouter

        return IstioRouter(kube, cache=cache)
    if provider.startswith("gatewayapi:"):
        try:
            from canary.routers import gatewayapi
        except ImportError as e:
            raise RouterError(f"provider {provider}: the Gateway API router is not available ({e})") from e
        return gatewayapi.make_router(provider, kube, cache=cache)
    raise RouterError(f"provider {provider!r} is not supported (supported: istio, gatewayapi:v1, "
                      "gatewayapi:v1beta1)")


__all__ = ["Router", "RouterError", "make_router", "DEFAULT_PROVIDER"]
