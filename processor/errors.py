"""Exit statuses and the exception types of the commands, in one place.

Exit status of every command: 0 success, 1 failure (Kafka, registry, delivery, local broker), 2 usage
or misconfiguration (bad flag value, invalid settings, missing confirmation, unreadable input),
3 authentication/authorization failure while `run` is processing, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

from typing import NoReturn

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130


class ConfigError(Exception):
    """Unrecoverable misconfiguration: the message names the setting to fix."""


class OpsError(Exception):
    """A failure the user can act on: printed as one line, exit `code`."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


class InputError(Exception):
    """An unreadable input file of `simulate` (exit 2)."""


class LocalKafkaError(Exception):
    """A local-broker failure the user can act on; the message says what to install, free or change."""


def usage_error(message: str) -> NoReturn:
    raise OpsError(message, EXIT_USAGE)
