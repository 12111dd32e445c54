"""The `canary` command (also installed as the kubectl plugin `kubectl-canary`).

    canary operator ...                      run the operator
    canary validate FILES                    check manifests as the operator will
    canary migrate FILES|DIR [--write]       Flagger manifests to canary.dev/v1beta1
    canary simulate CANARY [--scenario S]    decide a release offline (real engine, virtual clock)
    canary get|status [NAME] [-n NS|-A]      Canaries (-o wide|json|yaml|name, --watch, --wait)
    canary explain NAME [-o json]            the decision ledger as a timeline
    canary dashboard [-n NS|-A]              a live local web page of the Canaries
    canary promote|abort|retry|pause|resume NAME [--reason R]
    canary set-weight NAME N                 commands, as annotations the operator consumes
    canary version | completion SHELL

Exit codes: 0 ok (or Succeeded), 1 Failed / command refused or rejected / invalid manifest,
2 usage error, 3 error (no cluster, unknown Canary, forbidden, bad kubeconfig), 124 timeout.
See docs/cli.md.

Modules: ``parser`` (arguments, ``main``), ``api`` (the cluster client and context),
``watch`` and ``store`` (following a Canary, its Deployments and Pods), ``views`` (a Canary
read through the models), ``status``, ``live`` (the redrawn terminal view), ``explain``,
``control`` (the command verbs, checked against the engine's rules), ``validate``,
``offline`` (operator, simulate, crds), ``plot``, ``version`` (and completion) and the
``dashboard`` package (the web page).
"""

from canary.cli.api import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Api,
    CliError,
    Ctx,
    Forbidden,
    KubeApi,
    NotFound,
    NotServed,
    Target,
    get_canary,
)
from canary.cli.control import COMMANDS, cmd_command, precheck
from canary.cli.explain import EXPLAIN_ENTRIES, cmd_explain, explain_json, explain_text
from canary.cli.offline import cmd_crds, cmd_operator, cmd_simulate
from canary.cli.parser import build_parser, main
from canary.cli.status import cmd_status
from canary.cli.validate import cmd_validate
from canary.cli.views import View
from canary.cli.watch import Change

__all__ = [
    "EXIT_ERROR", "EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "Api", "CliError", "Ctx", "Forbidden", "KubeApi",
    "NotFound", "NotServed", "Target", "get_canary", "COMMANDS", "cmd_command", "precheck", "EXPLAIN_ENTRIES",
    "cmd_explain", "explain_json", "explain_text", "cmd_crds", "cmd_operator", "cmd_simulate", "cmd_validate",
    "build_parser", "main", "cmd_status", "View", "Change",
]
