"""`access-eval report`: the parser; the command is in `processor.tools.report`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from processor.cli.common import add_eval_topic, add_format, add_kafka_flags, add_settings_topic, command_parser
from processor.tools.common import run_tool
from processor.tools.report import cmd_report

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


REPORT_EXAMPLES = """examples:
  # what would switching account a3f1... to limited have denied in the last 30 days?
  access-eval report --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f
  access-eval report --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --since 7d --format json

The report reads the eval events topic up to its end offsets (committed events only) and counts the
would-be denies (state monitor, decision Deny) of the account whose eventTime falls in the window,
grouped by external account and identity, with the allowlist additions that would have turned them
into permits. When the settings topic is readable it also shows the account's current settings and
which suggested additions are already on the allowlist.

exit status: 0 ok, 1 Kafka failure, 2 invalid input
"""



def add_parser(sub: SubParsers) -> None:
    p = command_parser(
        sub,
        "report",
        "what switching an account to limited would deny (from the eval events)",
        "Summarise an account's would-be denies from the eval events topic: by external account and "
        "identity, with the allowlist additions that would have permitted them, and a plain verdict.",
        REPORT_EXAMPLES,
    )
    add_kafka_flags(p)
    add_eval_topic(p)
    add_settings_topic(p)
    p.add_argument("--account", required=True, help="the account to report on")
    p.add_argument("--since", default="30d", help="window: a duration back from now (default 30d) or an RFC 3339 time")
    add_format(p)
    p.set_defaults(func=lambda a: run_tool("report", cmd_report, a))
