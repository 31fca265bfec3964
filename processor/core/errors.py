"""The product's root exception and the exit statuses it maps to.

Every exception the product raises on purpose subclasses `AccessEvalError`, so one `except` catches
them all: a sysadmin's wrapper, and the command line's last resort (`processor.cli.main`), which
prints one line and exits with the exception's `exit_code` (docs/contract.md §8 and §11.8). It lives
in the pure core because the core's own models raise product exceptions (`InvalidSettings`,
`InvalidAttempt`) and the core imports nothing above it; `processor.errors` re-exports it beside the
command-level types.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130


class AccessEvalError(Exception):
    """Root of the product's exceptions; each subclass lives in the layer that raises it."""

    #: The exit status of a command this reaches unhandled: 1 (a failure) unless the subclass says
    #: otherwise (2 for misconfiguration and invalid input, as the contract's exit codes say).
    exit_code: int = EXIT_FAIL
