"""Flags and parser helpers shared by the tool commands (`settings`, `tail`, `report`)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from processor.config import RunConfig

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_TIMEOUT_S = 15.0
#: The tools read the topics `run` uses, with the same defaults.
DEFAULT_SETTINGS_TOPIC: str = RunConfig.model_fields["settings_topic"].default
DEFAULT_EVAL_TOPIC: str = RunConfig.model_fields["eval_topic"].default


def command_parser(
    sub: SubParsers, name: str, help_text: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A (sub)command parser whose epilog (examples, exit statuses) keeps its line breaks."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_kafka_flags(p: argparse.ArgumentParser) -> None:
    """--bootstrap-servers, --kafka-config, --timeout."""
    p.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers HOST:PORT[,...] (ACCESS_EVAL_BOOTSTRAP_SERVERS)"
    )
    p.add_argument("--kafka-config", help="librdkafka properties file (key=value), e.g. SASL/SSL settings")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for Kafka (default {DEFAULT_TIMEOUT_S:g})",
    )


def add_settings_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings-topic",
        default=os.environ.get("ACCESS_EVAL_SETTINGS_TOPIC", DEFAULT_SETTINGS_TOPIC),
        help=f"compacted settings topic (default {DEFAULT_SETTINGS_TOPIC}; ACCESS_EVAL_SETTINGS_TOPIC)",
    )


def add_eval_topic(p: argparse.ArgumentParser) -> None:
    """--eval-topic and --schema-registry-url (to decode Confluent-framed events)."""
    p.add_argument(
        "--eval-topic",
        default=os.environ.get("ACCESS_EVAL_EVAL_TOPIC", DEFAULT_EVAL_TOPIC),
        help=f"eval events topic (default {DEFAULT_EVAL_TOPIC}; ACCESS_EVAL_EVAL_TOPIC)",
    )
    p.add_argument(
        "--schema-registry-url",
        default=os.environ.get("ACCESS_EVAL_SCHEMA_REGISTRY_URL"),
        help="resolve Confluent-framed schema ids through this registry (ACCESS_EVAL_SCHEMA_REGISTRY_URL); "
        "auth/TLS from ACCESS_EVAL_SCHEMA_REGISTRY_* or schema.registry.* in --kafka-config",
    )


def add_format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=["table", "json"], default=default, help=f"output format (default {default})")
