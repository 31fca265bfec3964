"""`access-eval run`: flags generated from `processor.config.RunConfig`, so each flag, its type, its
help text and its default are written once, on the model.

A flag left out stays None and is not passed on: the model then takes ACCESS_EVAL_<FIELD> from the
environment, or its default (flags win over the environment).
"""

from __future__ import annotations

import argparse
import types
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from processor.config import RunConfig

if TYPE_CHECKING:
    from processor.cli.common import SubParsers

RUN_EXAMPLES = """examples:
  access-eval run --bootstrap-servers 127.0.0.1:9092 --create-topics
  ACCESS_EVAL_BOOTSTRAP_SERVERS=kafka:9093 ACCESS_EVAL_KAFKA_SECURITY_PROTOCOL=SASL_SSL access-eval run
"""

#: Fields whose values the model accepts in any case (a validator upper-cases them): the values are
#: listed in the help text instead of being argparse choices, which are case-sensitive.
CASE_INSENSITIVE = frozenset({"log_level"})


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _show(name: str, value: Any) -> str:
    """A default as the help text shows it: `86400000 = 24h`, `262144 = 256 KiB`, `20` (seconds)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and value > 0 and name.endswith("_ms") and value % 60_000 == 0:
        minutes = value // 60_000
        if minutes % 1440 == 0 and minutes >= 2 * 1440:
            return f"{value} = {minutes // 1440}d"
        return f"{value} = {minutes // 60}h" if minutes % 60 == 0 else f"{value} = {minutes}min"
    if isinstance(value, int) and value > 0 and name.endswith("_bytes") and value % 1024 == 0:
        return f"{value} = {value // 1024} KiB"
    return str(value)


def _or_list(values: list[str]) -> str:
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]


def flag_options(name: str, field: FieldInfo) -> dict[str, Any]:
    """The add_argument keywords of one RunConfig field (its flag is --name-with-dashes)."""
    annotation = _unwrap_optional(field.annotation)
    help_text = field.description or ""
    options: dict[str, Any] = {}
    if annotation is bool:
        options["action"] = "store_true"
        options["default"] = None  # not given: the environment or the model's default applies
    elif get_origin(annotation) is Literal:
        values = [str(v) for v in get_args(annotation)]
        if name in CASE_INSENSITIVE:
            help_text = f"{help_text}: {_or_list(values)}"
        else:
            options["choices"] = values
    elif annotation in (int, float):
        options["type"] = annotation
    # Everything else (str, Path) is passed as text; the model converts and validates it.
    default = None if field.is_required() else field.get_default()
    if not (default is None or default is False or default == ""):
        help_text = f"{help_text} (default {_show(name, default)})"
    options["help"] = help_text
    return options


def add_parser(sub: SubParsers) -> None:
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
    for name, field in RunConfig.model_fields.items():
        p.add_argument("--" + name.replace("_", "-"), **flag_options(name, field))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from processor.stream import app  # imports confluent_kafka: not for `--help`

    flags = {name: getattr(args, name) for name in RunConfig.model_fields}
    return app.run(flags)
