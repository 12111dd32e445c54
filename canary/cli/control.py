"""The control verbs (promote, abort, retry, pause, resume, set-weight): annotations the
operator consumes. The precheck asks the engine's own rule table (canary.engine.commands),
so the CLI and the operator cannot disagree about when a command is refused."""

from __future__ import annotations

import argparse
import os

from canary import commands
from canary.cli.api import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, Ctx, get_canary, namespace_of
from canary.cli.views import View, revision_of
from canary.engine import Facts, initializing, refusal
from canary.models import LastCommand
from canary.types import Phase

COMMANDS = ("promote", "abort", "retry", "pause", "resume", "set-weight")
"""The verbs, in the order `canary --help` lists them."""


def who(args: argparse.Namespace, ctx: Ctx) -> str:
    if getattr(args, "by", None):
        return str(args.by)
    return ctx.api.user or os.environ.get("USER") or os.environ.get("USERNAME") or ""


def _promise(command: str, view: View, weight: int | None) -> str:
    """What the operator will do with an accepted command."""
    status = view.status
    current = status.canary_weight
    return {
        "promote": ("the operator skips the remaining analysis, gates and steps and promotes the canary as soon "
                    "as it is ready"),
        "abort": ("the operator routes all traffic back to the primary, scales the canary to zero and marks the "
                  "canary Failed with your reason"),
        "retry": f"the operator runs revision {status.last_applied_spec or '?'} again from the start",
        "pause": (f"the operator holds the canary at weight {current}: no analysis steps, no new runs and no "
                  "deadline counting until `canary resume`"),
        "resume": "the operator continues where it stopped; the paused time does not count toward deadlines",
        "set-weight": (f"the operator routes {weight}% to the canary (now {current}%); the analysis continues "
                       f"from {weight} one interval later"),
    }[command]


def precheck(command: str, view: View, weight: int | None = None,
             revision: str | None = None) -> tuple[bool, str]:
    """(will the operator accept it, what it will do or why not) from the current status.

    The operator decides for real, on a newer state; this only spares a command that would be
    rejected. `revision` is the target's current revision (None: unknown). What the CLI
    cannot see (the canary's readiness) is left to the operator."""
    if command not in COMMANDS:
        raise ValueError(command)
    status = view.status
    facts = Facts(
        target=f"{view.target}.{view.namespace}" if view.namespace else view.target,
        paused=view.paused,
        initializing=initializing(status),
        revision=revision,
        promoted_revision=status.last_promoted_spec,
        strategy=view.analysis.strategy,
        max_weight=view.max_weight,
        weight=weight,
        weight_error="" if weight is not None or command != "set-weight" else "no weight given",
        # a weight above 0 during the analysis was routed by a step (or a set-weight)
        stepped=status.last_step_time is not None or status.canary_weight > 0,
    )
    why = refusal(command, status.phase or Phase.BLANK, facts)
    if why is not None:
        return False, why
    return True, _promise(command, view, weight)


def cmd_command(args: argparse.Namespace, ctx: Ctx) -> int:
    command = args.cmd
    namespace = namespace_of(ctx, args)
    view = View.of(get_canary(ctx, namespace, args.name))
    weight = getattr(args, "weight", None)
    revision = None
    if command == "retry" and view.target and not view.status.tracked_configs:
        # the target's revision is its template hash (tracked configs would fold into it)
        revision = revision_of(ctx.api.get_deployment(namespace, view.target))
    accepted, text = precheck(command, view, weight, revision)
    label = f"{namespace}/{args.name}"
    if not accepted and not args.force:
        print(f"error: {command} {label}: {text} (--force sends it anyway)", file=ctx.err, flush=True)
        return EXIT_FAILED
    by = who(args, ctx)
    at = ctx.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    value = commands.encode(by, reason=args.reason or "", at=at, weight=weight)
    annotations: dict[str, str | None] = {commands.annotation(command): value}
    if command == "resume":
        annotations[commands.annotation("pause")] = None
    ctx.api.annotate(namespace, args.name, annotations)
    cid = commands.command_id(command, value)
    ctx.print(f"{commands.annotation(command)} set on {label} (by {by or 'unknown'}, id {cid}): {text}.")
    if not accepted:
        ctx.print(f"warning: the operator will probably reject it: {text}")
    if not args.wait:
        return EXIT_OK
    return wait_for_command(ctx, namespace, args.name, command, cid, args.timeout)


def wait_for_command(ctx: Ctx, namespace: str, name: str, command: str, cid: str, timeout: float) -> int:
    """Follow the Canary (a watch) until the operator decided the command with this id."""
    deadline = ctx.monotonic() + timeout
    for change in ctx.api.watch(namespace, name, False, 1.0):
        if change is not None and change.kind == "canary" and change.type != "DELETED":
            last: LastCommand | None = View.of(change.obj).status.last_command
            if last is not None and last.id == cid:
                ctx.print(f"{last.result.lower()}: {last.message or ''}".rstrip(": "))
                return EXIT_OK if last.result == "Applied" else EXIT_FAILED
        if ctx.monotonic() >= deadline:
            ctx.print(f"timed out after {timeout:g}s waiting for the operator to decide the {command}")
            return EXIT_TIMEOUT
    return EXIT_TIMEOUT  # pragma: no cover  (a watch does not end by itself)


__all__ = ["COMMANDS", "cmd_command", "precheck", "wait_for_command", "who"]
