"""The interface every traffic router (one per mesh / gateway provider) implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from canary.models import Canary
from canary.types import Routes


class RouterError(Exception):
    """The routing object exists but cannot be used as it is (reported on the Canary)."""


@runtime_checkable
class Router(Protocol):
    async def reconcile(self, canary: Canary) -> None:
        """Create or update the routing objects of `canary`.

        Everything except the weights (and mirroring) follows the spec; the weights of an
        existing route are never changed here, only by `set_routes`.
        """

    async def get_routes(self, canary: Canary) -> Routes | None:
        """The weights currently routed; None when the routing object does not exist."""

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        """Route `routes.primary`/`routes.canary` percent (and mirror); writes only on a change."""

    async def finalize(self, canary: Canary) -> None:
        """Give back objects we took over (restore their original spec); revertOnDeletion."""
