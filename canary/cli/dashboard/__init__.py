"""`canary dashboard`: a local, read-only web page of the Canaries (as `kubectl argo rollouts
dashboard`), over the user's own kubeconfig and the CLI's global flags.

Modules: ``model`` (a Canary as the page's JSON data: cards, checks as small charts, the
explain timeline drawn), ``state`` (the one watch, its events), ``pages`` (the HTML shells and
the security headers), ``server`` (HTTP, server-sent events, the Host check, the actions) and
``static/`` (the one script and style sheet)."""

from __future__ import annotations

import argparse
import ipaddress

from canary.cli.api import EXIT_OK, CliError, Ctx, namespace_of


def cmd_dashboard(args: argparse.Namespace, ctx: Ctx) -> int:
    from canary.cli.dashboard.server import Server
    from canary.cli.dashboard.state import State

    address = args.address
    if address == "localhost":
        address = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise CliError(f"--address {args.address!r}: give an IP address (e.g. 127.0.0.1)") from None
    namespace = None if args.all_namespaces else namespace_of(ctx, args)
    ctx.api.list_canaries(namespace)  # not served, forbidden, unreachable: said now, in one line
    state = State(ctx.api, namespace)
    try:
        server = Server(state, address, args.port, allow_actions=args.allow_actions, ctx=ctx,
                        context=str(getattr(ctx.api, "context", "") or ""))
    except OSError as e:
        raise CliError(f"cannot listen on {args.address}:{args.port}: {e.strerror or e}") from None
    state.start()
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    mode = "actions allowed (--allow-actions)" if args.allow_actions else "read-only"
    ctx.print(f"Canary dashboard of {scope} ({mode}) at {server.url}")
    if not ip.is_loopback:
        print(f"warning: listening on {address}: whoever reaches this address reads your Canaries with "
              "your credentials", file=ctx.err, flush=True)
    ctx.print("Press Ctrl-C to stop.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        state.stop()
        server.server_close()
    return EXIT_OK


__all__ = ["cmd_dashboard"]
