"""What every subcommand shares and that needs nothing else: the Canary resource's name, the
exit codes and the errors reported in one line (canary/cli/api.py re-exports them)."""

from __future__ import annotations

GROUP, VERSION, PLURAL = "canary.dev", "v1beta1", "canaries"
RESOURCE = f"{PLURAL}.{GROUP}"

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_TIMEOUT = 0, 1, 3, 124
"""0 ok; 1 a release Failed, a command refused or rejected, validate found problems; 2 is
argparse's (a usage error); 3 an error (no cluster, unknown Canary, forbidden, bad input);
124 a timeout, as `timeout(1)` uses it."""
EXIT_PIPE = 141  # the reader of stdout went away (`| head`): as a program killed by SIGPIPE


class CliError(Exception):
    """A problem to report in one line (exit code 3)."""


class NotFound(CliError):
    pass


class Forbidden(CliError):
    pass


class NotServed(CliError):
    """The cluster does not serve canaries.canary.dev (the CRDs are not installed)."""
