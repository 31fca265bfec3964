"""The `access-eval` command line (SPEC §10): argument parsing only; each command lives in its module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from processor import __version__
from processor.local import broker as local
from processor.tools import ops

RUN_EXAMPLES = """examples:
  access-eval run --bootstrap-servers 127.0.0.1:9092 --create-topics
  ACCESS_EVAL_BOOTSTRAP_SERVERS=kafka:9093 ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL=SASL_SSL access-eval run
"""
SIMULATE_EXAMPLES = """examples:
  access-eval simulate --settings settings.jsonl --attempts attempts.jsonl > events.jsonl
  access-eval simulate --settings settings.jsonl --attempts attempts.jsonl --summary --format json
"""


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the stream processor",
        description="Evaluate access attempts from Kafka and publish Avro eval events, exactly once. "
        "Every flag also reads ACCESS_EVAL_<FLAG> (e.g. ACCESS_EVAL_BOOTSTRAP_SERVERS); flags win. "
        "librdkafka properties pass through as ACCESS_EVAL_KAFKA_<NAME> (sasl.password -> "
        "ACCESS_EVAL_KAFKA_SASL_PASSWORD) or --kafka-config FILE.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers HOST:PORT[,HOST:PORT]")
    p.add_argument("--group-id", help="consumer group of the attempts topic (default access-eval)")
    p.add_argument("--settings-topic", help="compacted settings topic (default iam.account-settings)")
    p.add_argument("--attempts-topic", help="input topic (default iam.access-attempts)")
    p.add_argument("--eval-topic", help="output topic (default iam.access-evaluations)")
    p.add_argument("--dlq-topic", help="dead-letter topic (default iam.access-attempts.dlq)")
    p.add_argument("--metrics-port", type=int, help="port of /metrics, /livez, /readyz (default 9108)")
    p.add_argument("--metrics-host", help="bind address of the HTTP server (default 0.0.0.0)")
    p.add_argument("--create-topics", action="store_true", default=None, help="create missing topics")
    p.add_argument("--topic-partitions", type=int, help="partitions of topics created by --create-topics")
    p.add_argument("--kafka-config", help="librdkafka properties file (key=value), e.g. SASL/SSL settings")
    p.add_argument("--delivery", choices=["exactly-once", "at-least-once"], help="default exactly-once")
    p.add_argument("--staleness-ms", type=int, help="settings view staleness bound (default 500)")
    p.add_argument("--settings-retention-ms", type=int, help="stream-time retention of old versions (24h)")
    p.add_argument("--batch-size", type=int, help="max attempts consumed per batch (default 5000)")
    p.add_argument("--commit-interval-ms", type=int, help="transaction commit interval (default 50)")
    p.add_argument("--max-future-ms", type=int, help="max event_time ahead of the clock (default 1h)")
    p.add_argument("--max-attempt-bytes", type=int, help="larger attempts go to the DLQ (default 256 KiB)")
    p.add_argument("--schema-registry-url", help="register the schema and use the Confluent wire format")
    p.add_argument("--account-labels", help="comma list of accounts given per-account metric labels")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--shutdown-timeout-s", type=float, help="SIGTERM: finish, commit, exit within (20)")
    p.add_argument("--startup-timeout-s", type=float, help="give up reaching Kafka after (0 = never)")
    p.add_argument("--transactional-id", help="default <group-id>-<hostname>")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from processor.stream import app

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    return app.run(flags)


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from processor.tools import simulate

    return simulate.main(args.settings, args.attempts, args.summary, args.format)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from processor.local import demo

    return demo.main(args.bootstrap_servers, args.duration, args.rate, args.metrics_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="access-eval",
        description="Evaluate IAM access attempts against external identity interaction settings.",
    )
    parser.add_argument("--version", action="version", version=f"access-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    local.add_local_parser(sub)
    _add_run(sub)
    _add_demo(sub)
    _add_simulate(sub)
    ops.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
