"""`access-eval tail`: the parser; the command is in `processor.tools.tail`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from processor.cli.common import add_eval_topic, add_format, add_kafka_flags, command_parser
from processor.tools.runner import run_tool
from processor.tools.tail import TailOptions, cmd_tail

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


TAIL_EXAMPLES = """examples:
  # follow new eval events as JSON lines (Ctrl-C to stop)
  access-eval tail --bootstrap-servers 127.0.0.1:9092
  # the would-be denies of one account written in the last hour, as a table, then exit
  access-eval tail --bootstrap-servers 127.0.0.1:9092 --since 1h --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --decision Deny --report-only --format table
  # the first 10 enforced denies of service ids in the topic
  access-eval tail --bootstrap-servers 127.0.0.1:9092 --from-beginning --enforced --identity-type service_id \\
      --limit 10

where it starts and when it stops:
  (default)          start at the end of the topic and follow new events until Ctrl-C or --limit
  --from-beginning   start at the oldest event; stop at the end offsets seen at start-up
  --since DURATION   start at events written DURATION ago (30d, 12h, 15m, 1d12h) or since an
                     RFC 3339 time, by Kafka record timestamp; stop at the end offsets seen at start-up
  --follow           with --from-beginning/--since: keep following instead of stopping at the end
  --limit N          stop after printing N matching events in every mode
Only committed events are read (isolation.level=read_committed). Both framings are decoded, detected
per message by its magic bytes (single-object C3 01, Confluent 00 + schema id via
--schema-registry-url). Undecodable messages are reported on stderr and skipped.

exit status: 0 ok, 1 Kafka failure, 2 invalid input
"""


def add_parser(sub: SubParsers) -> None:
    p = command_parser(
        sub,
        "tail",
        "print eval events (JSON lines or a table), with filters",
        "Print eval events from the eval events topic, decoded, as JSON lines (the same rendering as "
        "`simulate`) or a compact table.",
        TAIL_EXAMPLES,
    )
    add_kafka_flags(p)
    add_eval_topic(p)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest event (then stop at the end)")
    start.add_argument("--since", metavar="DURATION", help="start at events written DURATION ago or since a time")
    p.add_argument("--follow", action="store_true", help="keep following after reaching the end")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N matching events")
    p.add_argument("--account", help="only events of this target account")
    p.add_argument("--external-account", help="only events of identities from this account (authnAccountId)")
    p.add_argument("--decision", choices=["Permit", "Deny"], help="only this decision")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--enforced", action="store_true", help="only enforced results (state limited)")
    mode.add_argument("--report-only", action="store_true", help="only report-only results (state monitor)")
    p.add_argument("--identity-type", choices=["user", "service_id", "service"], help="only this identity type")
    add_format(p, default="json")
    p.set_defaults(func=lambda a: run_tool("tail", _tail, a))


def _tail(args: argparse.Namespace) -> int:
    """The flags as `tail`'s typed options."""
    return cmd_tail(TailOptions(
        eval_topic=args.eval_topic, bootstrap_servers=args.bootstrap_servers, kafka_config=args.kafka_config,
        timeout_s=args.timeout, schema_registry_url=args.schema_registry_url, from_beginning=args.from_beginning,
        since=args.since, follow=args.follow, limit=args.limit, account=args.account,
        external_account=args.external_account, decision=args.decision, enforced=args.enforced,
        report_only=args.report_only, identity_type=args.identity_type, fmt=args.format,
    ))
