"""The `access-eval` command line (SPEC §10): the top-level parser, built from one module per command.

librdkafka's own log lines go to the logger `access_eval.librdkafka` (`processor.kafka.clients`): in `run`
they are JSON log records at their own level; the tools and the demo drop them unless
ACCESS_EVAL_LOG_LEVEL=DEBUG (`clients.quiet_librdkafka`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from processor import __version__, signals
from processor.cli import demo, local, report, run, settings, simulate, tail
from processor.errors import EXIT_INTERRUPTED, AccessEvalError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="access-eval",
        description="Evaluate IAM access attempts against external identity interaction settings.",
    )
    parser.add_argument("--version", action="version", version=f"access-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (local, run, demo, simulate, settings, tail, report):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    if args.command != "run":  # `run` takes over held signals itself (stream.app)
        signals.release()
    try:
        code = int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except AccessEvalError as exc:  # the last resort: one line and the exception's exit status, no traceback
        print(f"access-eval {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
