"""`access-eval demo`: the parser; the command is in `processor.local.demo`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processor.cli.common import SubParsers


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "demo",
        help="local Kafka + processor + sample traffic, with a live view",
        description="Start the local Kafka (unless --bootstrap-servers is given), publish sample settings, "
        "generate access attempts, run the processor and show what it does.",
    )
    p.add_argument("--bootstrap-servers", help="use this cluster instead of starting the local one")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=200.0, help="attempts per second to generate (default 200)")
    p.add_argument("--metrics-port", type=int, default=9108, help="port of /metrics (default 9108)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from processor.local import demo  # imports confluent_kafka and the processor: not for `--help`

    return demo.main(args.bootstrap_servers, args.duration, args.rate, args.metrics_port)
