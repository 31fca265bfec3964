"""`access-eval simulate`: the parser; the command is in `processor.tools.simulate`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from processor.tools import simulate

if TYPE_CHECKING:
    from processor.cli.common import SubParsers

SIMULATE_EXAMPLES = """examples:
  access-eval simulate --settings settings.jsonl --attempts attempts.jsonl > events.jsonl
  access-eval simulate --settings settings.jsonl --attempts attempts.jsonl --summary --format json
"""


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "simulate",
        help="evaluate JSONL files offline with the processor's code",
        description="Evaluate attempts (one JSON per line) against settings (one JSON per line, optional "
        "updated_at) and print one eval event per line, or with --summary the would-be denies that "
        "switching to limited would block.",
        epilog=SIMULATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--settings", required=True, help="settings JSONL file")
    p.add_argument("--attempts", required=True, help="attempts JSONL file")
    p.add_argument("--summary", action="store_true", help="print outcome counts and would-be denies")
    p.add_argument("--format", choices=["table", "json"], default="table", help="summary format")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    return simulate.main(args.settings, args.attempts, args.summary, args.format)
