"""`canary status` (alias `get`): a table (`-o wide|json|yaml|name`), `--watch` and `--wait`.

`--watch` and `--wait` follow a watch (canary.cli.watch), never a GET per second. On a
terminal `--watch` redraws a live view (canary.cli.live); otherwise, and with `--no-color` or
$NO_COLOR, every change is a line appended. `--wait` also prints a line per change, and when
stdout is not a terminal a heartbeat line at least every HEARTBEAT seconds, so a CI log never
goes silent."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

import yaml

from canary.cli.api import (
    EXIT_OK,
    EXIT_TIMEOUT,
    GROUP,
    CliError,
    Ctx,
    get_canary,
    namespace_of,
)
from canary.cli.views import STATUS_HEADER, View, last_checks, outcome, status_row, table
from canary.cli.store import Store

HEARTBEAT = 30.0
"""Seconds without a change after which --wait prints the state again (not on a terminal)."""
IDLE = 1.0


def _key(o: dict) -> tuple[str, str]:
    meta = o.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def as_list(items: list[dict]) -> dict[str, Any]:
    """kubectl's envelope for a list."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def wide_row(view: View, row: list[str], store: Store | None) -> list[str]:
    status = view.status
    if view.analysis.strategy == "canary":
        step = "-"
    else:
        step = f"{status.iterations}/{view.analysis.iterations or 0}"
    image = "-"
    if store is not None:
        image = store.image(view.namespace, view.target) or "-"
    # NAMESPACE NAME PHASE STRATEGY ITER WEIGHT FAILED CHECKS IMAGE AGE MESSAGE
    return [*row[:3], view.analysis.strategy, step, *row[3:6], image, *row[6:]]


WIDE_HEADER = ["NAMESPACE", "NAME", "PHASE", "STRATEGY", "ITER", "WEIGHT", "FAILED", "CHECKS", "IMAGE", "AGE",
               "MESSAGE"]


def show(ctx: Ctx, args: argparse.Namespace, items: list[dict], namespace: str | None) -> int:
    if args.output in ("json", "yaml"):
        data: Any = items[0] if args.name else as_list(items)
        ctx.print(json.dumps(data, indent=2) if args.output == "json"
                  else yaml.safe_dump(data, sort_keys=False).rstrip())
        return EXIT_OK
    if args.output == "name":
        for obj in items:
            ctx.print(f"canary.{GROUP}/{_key(obj)[1]}")
        return EXIT_OK
    if not items:
        where = "any namespace" if args.all_namespaces else f'namespace "{namespace}"'
        ctx.print(f"No canaries found in {where}.")
        return EXIT_OK
    now = ctx.clock()
    start = 0 if args.all_namespaces else 1
    if args.output == "wide":
        store = Store()
        for obj in items:
            view = View.of(obj)
            deployment = ctx.api.get_deployment(view.namespace, view.target) if view.target else None
            if deployment is not None:
                store.deployments[(view.namespace, view.target)] = deployment
        rows = [wide_row(View.of(o), status_row(View.of(o), now), store)[start:] for o in items]
        ctx.print(table(rows, WIDE_HEADER[start:]))
        return EXIT_OK
    rows = [status_row(View.of(o), now)[start:] for o in items]
    ctx.print(table(rows, STATUS_HEADER[start:]))
    return EXIT_OK


def line(ctx: Ctx, view: View, with_namespace: bool) -> str:
    row = status_row(view, ctx.clock(), with_age=False)
    ns = f"{row[0]}/" if with_namespace else ""
    return (f"{ctx.clock().strftime('%H:%M:%S')}  {ns}{row[1]}  {row[2]}  weight {row[3]}  "
            f"failed {row[4]}  {row[5]}  {row[6]}").rstrip()


def change_key(view: View) -> tuple[object, ...]:
    """What makes a new line: the phase, weights, failed checks, which checks pass, the last
    decision; not a metric value that moved a little between two steps at a closed gate."""
    row = status_row(view, view.created or datetime.now(timezone.utc), with_age=False)
    checks = tuple((c.name, c.ok) for c in last_checks(view.status))
    last = view.status.ledger[-1] if view.status.ledger else None
    decision = (last.action, last.time) if last is not None and (last.count or 1) == 1 else (
        last.action if last is not None else None)
    return (row[0], row[1], row[2], row[3], row[4], checks, decision, view.status.paused is not None)


def follow(ctx: Ctx, args: argparse.Namespace, namespace: str | None) -> int:
    """--watch and --wait: changes from a watch, a line (or a redraw) per change."""
    if args.name and namespace is not None:
        get_canary(ctx, namespace, args.name)  # a clear error for a name that is not there
    live = args.watch and ctx.is_tty() and ctx.color is not False and args.output == "text"
    related = bool(args.name) and namespace is not None
    store = Store()
    deadline = ctx.monotonic() + args.timeout if args.timeout else None
    printed: dict[tuple[str, str], tuple[object, ...]] = {}
    quiet_since = ctx.monotonic()
    view_of: Any = None
    if live:
        from canary.cli.live import LiveView

        view_of = LiveView(ctx, store, namespace, args.name)
        view_of.start()
    try:
        for change in ctx.api.watch(namespace, args.name, related, IDLE):
            if change is not None:
                if view_of is not None:
                    with view_of.lock:
                        store.apply(change)
                else:
                    store.apply(change)
            if view_of is not None:
                view_of.update()
            else:
                for obj in store.canaries_sorted():
                    key = _key(obj)
                    if args.name and key[1] != args.name:
                        continue
                    view = View.of(obj)
                    text = line(ctx, view, with_namespace=args.all_namespaces or not args.name)
                    state = change_key(view)
                    if printed.get(key) != state:
                        printed[key] = state
                        quiet_since = ctx.monotonic()
                        ctx.print(text)
            current = store.canaries.get((namespace or "", args.name or "")) if args.name else None
            if args.wait and current is not None:
                view = View.of(current)
                deployment = store.deployments.get((view.namespace, view.target))
                if deployment is None and view.target:
                    deployment = ctx.api.get_deployment(view.namespace, view.target)
                    if deployment is not None:
                        store.deployments[(view.namespace, view.target)] = deployment
                result = outcome(view, deployment)
                if result is not None:
                    return result
                if (view_of is None and not ctx.is_tty() and ctx.monotonic() - quiet_since >= HEARTBEAT):
                    quiet_since = ctx.monotonic()
                    ctx.print(line(ctx, view, with_namespace=False) + f"  (no change for {HEARTBEAT:g}s)")
            if deadline is not None and ctx.monotonic() >= deadline:
                if not args.wait:
                    return EXIT_OK
                phase = View.of(current).status.phase.value if current is not None else "gone"
                ctx.print(f"timed out after {args.timeout:g}s; {args.name} is {phase or '-'}")
                return EXIT_TIMEOUT
    finally:
        if view_of is not None:
            view_of.stop()
    raise CliError("the watch ended")  # pragma: no cover  (the stream does not end by itself)


def cmd_status(args: argparse.Namespace, ctx: Ctx) -> int:
    if args.wait and not args.name:
        raise CliError("--wait needs a NAME")
    namespace = None if args.all_namespaces and not args.name else namespace_of(ctx, args)
    if args.watch or args.wait:
        return follow(ctx, args, namespace)
    if args.name:
        items = [get_canary(ctx, namespace or ctx.api.namespace, args.name)]
    else:
        items = sorted(ctx.api.list_canaries(namespace), key=_key)
    return show(ctx, args, items, namespace)
