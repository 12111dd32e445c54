"""`canary version` and shell completion (`canary completion bash|zsh|fish`; the
`kubectl_complete-canary` helper that kubectl 1.26+ calls is in canary/cli/parser.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from canary.cli.api import EXIT_OK, CliError, Ctx, namespace_of
from canary.version import version

OPERATOR_LABEL = "app.kubernetes.io/name=canary-operator"


def client_version() -> str:
    return version()


def _operators(api: Any) -> list[dict[str, str]]:
    """The operator Deployments the user can see (the chart labels them), with their version."""
    found = []
    listing = api.raw_get("/apis/apps/v1/deployments", [("labelSelector", OPERATOR_LABEL)])
    for d in listing.get("items") or []:
        meta = d.get("metadata") or {}
        labels = meta.get("labels") or {}
        containers = ((d.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [{}]
        image = str(containers[0].get("image") or "")
        version = labels.get("app.kubernetes.io/version") or (image.rsplit(":", 1)[1] if ":" in image else "")
        status = d.get("status") or {}
        found.append({"namespace": str(meta.get("namespace", "")), "name": str(meta.get("name", "")),
                      "version": str(version or "unknown"), "image": image,
                      "ready": f"{status.get('readyReplicas') or 0}/{(d.get('spec') or {}).get('replicas', 1)}"})
    return found


def cmd_version(args: argparse.Namespace, ctx: Ctx) -> int:
    info: dict[str, Any] = {"clientVersion": client_version()}
    problem = ""
    if not args.client:
        try:
            api = ctx.api
            raw = getattr(api, "raw_get", None)
            if raw is None:
                raise CliError("this API client cannot read versions")
            info["serverVersion"] = str((raw("/version") or {}).get("gitVersion") or "unknown")
            info["operators"] = _operators(api)
        except CliError as e:
            problem = str(e)
            info["serverError"] = problem
    if args.output == "json":
        ctx.print(json.dumps(info, indent=2))
    elif args.output == "yaml":
        ctx.print(yaml.safe_dump(info, sort_keys=False).rstrip())
    else:
        ctx.print(f"Client Version: {info['clientVersion']}")
        if args.client:
            return EXIT_OK
        if problem:
            ctx.print(f"Server: not reachable: {problem}")
            return EXIT_OK
        ctx.print(f"Server Version: {info['serverVersion']}")
        if not info["operators"]:
            ctx.print(f"Operator Version: not found (no Deployment labelled {OPERATOR_LABEL} that you can read)")
        for op in info["operators"]:
            ctx.print(f"Operator Version: {op['version']} ({op['namespace']}/{op['name']}, image {op['image']}, "
                      f"ready {op['ready']})")
    return EXIT_OK


# ---- completion --------------------------------------------------------------------------------

BASH = """# canary completion for bash: source <(canary completion bash)
_canary_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(%(prog)s __complete "${COMP_WORDS[@]:1:$COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _canary_complete canary kubectl-canary
"""
ZSH = """# canary completion for zsh: source <(canary completion zsh)
autoload -U +X bashcompinit && bashcompinit
""" + BASH
FISH = """# canary completion for fish: canary completion fish | source
complete -c canary -f -a '(canary __complete (commandline -opc)[2..-1] (commandline -ct))'
complete -c kubectl-canary -f -a '(canary __complete (commandline -opc)[2..-1] (commandline -ct))'
"""


def cmd_completion(args: argparse.Namespace, ctx: Ctx) -> int:
    ctx.out.write({"bash": BASH % {"prog": "canary"}, "zsh": ZSH % {"prog": "canary"}, "fish": FISH}[args.shell])
    return EXIT_OK


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {k: v for k, v in action.choices.items() if not k.startswith("__")}
    return {}


def candidates(words: list[str], parser: argparse.ArgumentParser, ctx: Ctx | None = None,
               args: argparse.Namespace | None = None) -> list[str]:
    """What may come next after `words` (the last one is the partial word being completed) on
    the command line `parser` reads (canary/cli/parser.py passes its own: no import cycle)."""
    *done, partial = words or [""]
    commands = _subparsers(parser)
    command = next((w for w in done if w in commands), None)
    target = commands[command] if command else parser
    options = sorted(o for a in target._actions for o in a.option_strings if o.startswith("--") or len(o) == 2)
    if partial.startswith("-"):
        return [o for o in options if o.startswith(partial)]
    previous = done[-1] if done else ""
    takes_value = {o: a for a in target._actions for o in a.option_strings if a.nargs != 0}
    if previous in takes_value:
        action = takes_value[previous]
        if action.choices:
            return [str(c) for c in action.choices if str(c).startswith(partial)]
        return []
    if command is None:
        return [c for c in commands if c.startswith(partial)]
    positionals = []
    rest = done[done.index(command) + 1:]
    skip = False
    for w in rest:
        if skip:
            skip = False
        elif w.startswith("-"):
            skip = w in takes_value and "=" not in w
        else:
            positionals.append(w)
    wants_name = any(a.dest == "name" for a in target._actions)
    if wants_name and not positionals and ctx is not None and args is not None:
        try:
            items = ctx.api.list_canaries(None if args.all_namespaces else namespace_of(ctx, args))
        except CliError:
            return []
        names = sorted({str((c.get("metadata") or {}).get("name", "")) for c in items})
        return [n for n in names if n.startswith(partial)]
    shell = next((a for a in target._actions if a.dest == "shell"), None)
    if shell is not None and shell.choices and not positionals:
        return [str(c) for c in shell.choices if str(c).startswith(partial)]
    return []


SCOPE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "--context": "context", "--kubeconfig": "kubeconfig",
               "--as": "as_user"}


def cmd_complete(args: argparse.Namespace, ctx: Ctx) -> int:
    # the global flags among the words (-n, --context, ...) scope the names offered
    words = list(args.words)
    done = words[:-1]
    for i, word in enumerate(done):
        flag, _, value = word.partition("=")
        if flag in SCOPE_FLAGS and (value or i + 1 < len(done)):
            setattr(args, SCOPE_FLAGS[flag], value or done[i + 1])
        elif word in ("-A", "--all-namespaces"):
            args.all_namespaces = True
    for word in candidates(words, args.build_parser(), ctx, args):
        ctx.out.write(word + "\n")
    return EXIT_OK
