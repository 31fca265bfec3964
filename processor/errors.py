"""Exit statuses and the exception types of the commands, in one place.

Exit status of every command: 0 success, 1 failure (Kafka, registry, delivery, local broker), 2 usage
or misconfiguration (bad flag value, invalid settings, missing confirmation, unreadable input),
3 authentication/authorization failure while `run` is processing, 130 interrupted (Ctrl-C).

The statuses and the root exception `AccessEvalError` are defined in `processor.core.errors` (the
core's own exceptions subclass it too) and re-exported here: commands import this module.
"""

from __future__ import annotations

from typing import NoReturn

from processor.core.errors import (  # re-exported: the one import of the commands
    EXIT_AUTH,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AccessEvalError,
)

__all__ = [
    "EXIT_AUTH", "EXIT_FAIL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "AccessEvalError", "ConfigError",
    "InputError", "LocalKafkaError", "OpsError", "usage_error",
]


class ConfigError(AccessEvalError):
    """Unrecoverable misconfiguration: the message names the setting to fix (exit 2)."""

    exit_code = EXIT_USAGE


class OpsError(AccessEvalError):
    """A failure the user can act on: printed as one line, exit `code`."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.exit_code = code

    @property
    def code(self) -> int:
        return self.exit_code


class InputError(AccessEvalError):
    """An unreadable input file of `simulate` (exit 2)."""

    exit_code = EXIT_USAGE


class LocalKafkaError(AccessEvalError):
    """A local-broker failure the user can act on; the message says what to install, free or change."""


def usage_error(message: str) -> NoReturn:
    raise OpsError(message, EXIT_USAGE)
