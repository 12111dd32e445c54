"""References of `canary validate --cluster` looked up in the cluster (read only)."""

from __future__ import annotations

from typing import Any

from canary.cli.api import GROUP, VERSION, CliError, Ctx, NotFound


class ClusterRefs:
    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        api = ctx.api
        self.where = f"context {getattr(api, 'context', '') or getattr(api, 'server', '') or 'default'}"

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        raw = getattr(self.ctx.api, "raw_get", None)
        if raw is None:
            raise CliError("--cluster needs a Kubernetes API client")
        try:
            return dict(raw(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}"))
        except NotFound:
            return None

    def template(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("metrictemplates", namespace, name)

    def alert_provider(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("alertproviders", namespace, name)
