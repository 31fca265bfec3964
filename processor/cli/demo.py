"""`access-eval demo`: the parser; the command is in `processor.local.demo`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "demo",
        help="local Kafka + processor + sample traffic, with a live view",
        description="Start the local Kafka (unless --bootstrap-servers is given), publish sample settings, "
        "generate access attempts, run the processor and show what it does. On a cluster given with "
        "--bootstrap-servers the topics are access-eval-demo.* unless named, and the demo asks for "
        "confirmation (--yes without a terminal; else exit 2) before writing made-up settings there.",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("ACCESS_EVAL_BOOTSTRAP_SERVERS"),
        help="use this cluster (ACCESS_EVAL_BOOTSTRAP_SERVERS) instead of starting the local one: topics default "
        "to demo-prefixed names and the demo asks for confirmation before writing",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=200.0, help="attempts per second to generate (default 200)")
    p.add_argument("--metrics-port", type=int, default=9108, help="port of /metrics (default 9108)")
    for flag, default in (("--settings-topic", "iam.account-settings"), ("--attempts-topic", "iam.access-attempts"),
                          ("--eval-topic", "iam.access-evaluations"), ("--dlq-topic", "iam.access-attempts.dlq")):
        p.add_argument(
            flag,
            help=f"topic to use (default {default} on the local broker, access-eval-demo.{default} on a cluster "
            "given with --bootstrap-servers)",
        )
    p.add_argument(
        "--yes", action="store_true", help="with --bootstrap-servers: write to that cluster without asking"
    )
    p.add_argument("--seed", type=int, default=7,
                   help="the demo's accounts and traffic follow from it (default 7); a second run with the same "
                   "seed reuses the same accounts and adds traffic")
    p.add_argument("--pages-dir", default="access-eval-demo-pages",
                   help="where the report pages go when the demo stops (default ./access-eval-demo-pages)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from processor.local import demo  # imports confluent_kafka and the processor: not for `--help`

    topic_names = {name: getattr(args, name) for name in demo.TOPIC_FIELDS}
    return demo.main(
        args.bootstrap_servers, args.duration, args.rate, args.metrics_port, topic_names=topic_names, yes=args.yes,
        seed=args.seed, pages_dir=Path(args.pages_dir),
    )
