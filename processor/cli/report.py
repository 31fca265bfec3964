"""`access-eval report`: the parser; the command is in `processor.tools.report`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from processor.cli.common import add_eval_topic, add_kafka_flags, add_settings_topic, command_parser
from processor.core.allowlist_advice import DEFAULT_COVER_SHARE, DEFAULT_MAX_ADDITIONS
from processor.tools.accounts import account_id
from processor.tools.report import DEFAULT_TOP, FORMATS, ReportOptions, cmd_report
from processor.tools.runner import run_tool

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


REPORT_EXAMPLES = """examples:
  # can account a3f1... switch to limited? (the last 30 days)
  access-eval report --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f
  access-eval report --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --since 7d --format json
  # which accounts can switch today? every account with an identity type in monitor, readiest first
  access-eval report --bootstrap-servers 127.0.0.1:9092 --all-accounts
  # the same as one self-contained page (no network when opened)
  access-eval report --bootstrap-servers 127.0.0.1:9092 --all-accounts --format html --output fleet.html

The report reads the eval events topic up to its end offsets (committed events only), once, and
counts the would-be denies (state monitor, decision Deny) whose eventTime falls in the window: the
verdict and key figures first, then the top external accounts, then the suggested allowlist
additions ranked by the would-be denies each removes, with their cumulative share. A candidate with
a single attempt is a one-off (noise) and is not recommended. Readiness: ready now (nothing the
current allowlists would not permit), ready after adding at most --max-additions recommended
accounts, not ready, or no evidence (no report-only evaluations in the window).

exit status: 0 ok, 1 Kafka failure, 2 invalid input
"""


def add_parser(sub: SubParsers) -> None:
    p = command_parser(
        sub,
        "report",
        "can an account switch to limited? (one account or the fleet, from the eval events)",
        "Summarise would-be denies from the eval events topic: for one account (--account) by external "
        "account and identity, with a ranked allowlist suggestion, or for every account with an identity "
        "type in monitor (--all-accounts), ranked by readiness.",
        REPORT_EXAMPLES,
    )
    add_kafka_flags(p)
    add_eval_topic(p)
    add_settings_topic(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--account", help="the account to report on")
    which.add_argument("--all-accounts", action="store_true",
                       help="the fleet view: every account whose settings have an identity type in monitor")
    p.add_argument("--since", default="30d", help="window: a duration back from now (default 30d) or an RFC 3339 time")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help=f"rows per table in the text form (default {DEFAULT_TOP}; 0 for all)")
    p.add_argument("--max-additions", type=int, default=DEFAULT_MAX_ADDITIONS,
                   help="K: 'ready after additions' means at most K recommended allowlist additions "
                   f"(default {DEFAULT_MAX_ADDITIONS})")
    p.add_argument("--cover", type=float, default=DEFAULT_COVER_SHARE * 100,
                   help="share in percent for 'the fewest additions covering this share of the would-be denies' "
                   f"(default {DEFAULT_COVER_SHARE * 100:g})")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default), json, or html (one self-contained page; needs --output)")
    p.add_argument("--output", help="write to this file instead of stdout")
    p.add_argument("--readers", type=int, default=0,
                   help="processes reading the eval topic's partitions in parallel (default 0: for "
                   "--all-accounts one per CPU, at most one per partition; for --account 1, a single reader)")
    p.set_defaults(func=lambda a: run_tool("report", _report, a))


def _report(args: argparse.Namespace) -> int:
    """Flags -> `ReportOptions` (which checks them), then the command."""
    opts = ReportOptions(
        account=None if args.all_accounts else account_id(args.account),
        since=args.since, top=args.top, max_additions=args.max_additions, cover_share=args.cover / 100,
        fmt=args.format, output=Path(args.output) if args.output else None, eval_topic=args.eval_topic,
        settings_topic=args.settings_topic, schema_registry_url=args.schema_registry_url, timeout_s=args.timeout,
        readers=args.readers,
    )
    return cmd_report(opts, args)
