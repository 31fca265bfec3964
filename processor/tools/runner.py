"""Running one tool: its log levels, and every anticipated failure turned into one line on stderr and an
exit status (`processor.errors`), never a traceback. No argument parsing here (that is `processor.cli`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from processor.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, AccessEvalError
from processor.kafka import clients

#: What the command takes (the cli passes argparse's namespace; tests may pass anything).
Args = TypeVar("Args")


def debug_logging() -> bool:
    """ACCESS_EVAL_LOG_LEVEL=DEBUG: the tools and the demo show librdkafka's own log lines too."""
    return os.environ.get("ACCESS_EVAL_LOG_LEVEL", "").upper() == "DEBUG"


def quiet_processor_logs() -> None:
    """The settings table logs rejected records; the tools report them in their own output."""
    logging.getLogger("access_eval.settings").setLevel(logging.CRITICAL)


def run_tool(name: str, func: Callable[[Args], int], args: Args) -> int:
    """Run a tool; every anticipated failure becomes one line on stderr and an exit status."""
    from confluent_kafka import KafkaException

    clients.quiet_librdkafka(debug=debug_logging())
    try:
        return func(args)
    except AccessEvalError as exc:  # OpsError: its code; ConfigError, invalid input: 2; the rest: 1
        print(f"access-eval {name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaException as exc:
        err = exc.args[0]
        text = err.str() if hasattr(err, "str") else str(err)
        print(f"access-eval {name}: Kafka error: {text}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `access-eval tail | head`: the reader left, which is fine
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
