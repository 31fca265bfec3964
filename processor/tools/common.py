"""What every operator tool shares: account ids, durations, Kafka properties and the broker check,
error handling, JSON and table output. No argument parsing here (that is `processor.cli`).

Errors are one line on stderr, never a traceback; exit statuses are in `processor.errors`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from processor.config import KAFKA_ENV_PREFIX, kafka_only, read_properties
from processor.core.display import fit, pad, printable, width
from processor.core.ids import account_problem, normalize_account
from processor.core.times import rfc3339_millis, to_millis
from processor.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, AccessEvalError, OpsError, usage_error
from processor.kafka import clients

# --- identifiers and time -------------------------------------------------------------------------


def account_id(raw: str, flag: str = "--account") -> str:
    """A normalised account id, or a usage error naming the flag and what is wrong (contract §3.2).

    The rule is the processor's own (`ids.account_problem`): what a flag accepts, a settings record and
    an attempt may hold, and the other way round. The input is echoed only escaped (`printable`)."""
    if not normalize_account(raw):
        usage_error(f"{flag}: account id is empty")
    problem = account_problem(raw)
    if problem is not None:
        usage_error(f"{flag}: invalid account id {fit(printable(raw.strip()), 80)}: {problem}")
    return normalize_account(raw)


def account_list(values: list[str] | None, flag: str) -> list[str]:
    """Ids from repeated flags, each possibly a comma-separated list; normalised, de-duplicated, in order."""
    out: dict[str, None] = {}
    for value in values or []:
        for part in value.split(","):
            if part.strip():
                out[account_id(part, flag)] = None
    return list(out)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_duration_ms(text: str, flag: str = "--since") -> int:
    """`30d`, `12h`, `1d12h`, `90s`, `500ms`, `2w` -> milliseconds."""
    compact = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        m = _DURATION_PART.match(compact, pos)
        if m is None:
            usage_error(f"{flag}: invalid duration '{printable(text)}': use e.g. 30d, 12h, 15m, 90s, 1d12h")
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos == 0 or total <= 0:
        usage_error(f"{flag}: invalid duration '{printable(text)}': use e.g. 30d, 12h, 15m, 90s, 1d12h")
    return int(total)


def parse_since(text: str, now_ms: int, flag: str = "--since") -> tuple[int, str]:
    """A duration back from now (`30d`) or an RFC 3339 instant -> (start ms, words for messages)."""
    if "T" in text or (text[:4].isdigit() and "-" in text):
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            usage_error(
                f"{flag}: invalid time '{printable(text)}': use a duration (30d) or RFC 3339 (2026-11-01T00:00:00Z)"
            )
        if dt.tzinfo is None:
            usage_error(f"{flag}: '{printable(text)}' has no UTC offset: add Z or +HH:MM")
        start = to_millis(dt)
        return start, f"since {rfc3339_millis(start)}"
    ms = parse_duration_ms(text, flag)
    return now_ms - ms, f"in the last {_words(text)}"


def _words(duration: str) -> str:
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", duration.lower())
    if m is None:
        return duration.strip()
    n, unit = int(m.group(1)), {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}[m.group(2)]
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def now_ms() -> int:
    return int(time.time() * 1000)


# --- Kafka ----------------------------------------------------------------------------------------


class KafkaFlags(Protocol):
    """What reaching Kafka takes from a command's flags: a typed options object or argparse's namespace."""

    @property
    def bootstrap_servers(self) -> str | None: ...

    @property
    def kafka_config(self) -> str | None: ...


def raw_properties(args: KafkaFlags) -> dict[str, str]:
    """The properties file (--kafka-config / ACCESS_EVAL_KAFKA_CONFIG), then ACCESS_EVAL_KAFKA_* variables."""
    props: dict[str, str] = {}
    path = args.kafka_config or os.environ.get("ACCESS_EVAL_KAFKA_CONFIG")
    if path:
        props.update(read_properties(Path(path)))
    for name, value in os.environ.items():
        if name.startswith(KAFKA_ENV_PREFIX) and name != "ACCESS_EVAL_KAFKA_CONFIG":
            props[name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = value
    return props


def kafka_props(args: KafkaFlags) -> dict[str, Any]:
    """The user's librdkafka properties for the tools: pass-through properties + bootstrap servers.
    Each client's own configuration is built from them by `processor.kafka.clients`."""
    bootstrap = args.bootstrap_servers or os.environ.get("ACCESS_EVAL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        usage_error("--bootstrap-servers (or ACCESS_EVAL_BOOTSTRAP_SERVERS) is required")
    props: dict[str, Any] = kafka_only(raw_properties(args))
    props["bootstrap.servers"] = bootstrap
    clients.check_properties(props)  # a refused property: one line naming it, exit 2 (ConfigError)
    return props


def connect(props: dict[str, Any], timeout_s: float) -> Any:
    """An AdminClient on a cluster that answered a metadata request, or OpsError (one line)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from processor.kafka.errors import AUTH_ERRORS

    errors: list[KafkaError] = []
    admin = AdminClient(clients.admin_conf(props, error_cb=errors.append))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
        admin.poll(0)  # serves error_cb (a failed SASL handshake only shows there) and librdkafka's log lines
        codes = {e.code() for e in errors} | {err.code()}
        if codes & AUTH_ERRORS:
            raise OpsError(
                "Kafka authentication/authorization failed: check sasl.* / security.protocol in --kafka-config "
                "or ACCESS_EVAL_KAFKA_* variables"
            ) from None
        detail = errors[-1].str() if errors else err.str()
        raise OpsError(
            f"cannot reach Kafka at --bootstrap-servers {props['bootstrap.servers']} within {timeout_s:g}s: {detail}"
        ) from None
    return admin


def topic_partitions(admin: Any, topic: str, flag: str) -> list[int]:
    md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        from confluent_kafka import KafkaError

        if md is None or md.error is None or md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise OpsError(
                f"topic {topic!r} ({flag}) does not exist: check the name, or create it "
                "(`access-eval run --create-topics` creates the processor's topics)"
            )
        raise OpsError(f"topic {topic!r} ({flag}): {md.error.str()}")
    return sorted(md.partitions)


def topic_exists(admin: Any, topic: str) -> bool:
    md = admin.list_topics(timeout=10).topics.get(topic)
    return md is not None and md.error is None and bool(md.partitions)


def debug_logging() -> bool:
    """ACCESS_EVAL_LOG_LEVEL=DEBUG: the tools and the demo show librdkafka's own log lines too."""
    return os.environ.get("ACCESS_EVAL_LOG_LEVEL", "").upper() == "DEBUG"


def confirm(prompt: str) -> bool:
    """Ask on stderr, read the answer from stdin (a terminal): yes only for y/yes."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def quiet_processor_logs() -> None:
    """The settings table logs rejected records; the tools report them in their own output."""
    logging.getLogger("access_eval.settings").setLevel(logging.CRITICAL)


# --- running a command ----------------------------------------------------------------------------


def run_tool(name: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a tool; every anticipated failure becomes one line on stderr and an exit status."""
    from confluent_kafka import KafkaException

    clients.quiet_librdkafka(debug=debug_logging())
    try:
        return func(args)
    except AccessEvalError as exc:  # OpsError: its code; ConfigError, invalid input: 2; the rest: 1
        print(f"access-eval {name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaException as exc:
        err = exc.args[0]
        text = err.str() if hasattr(err, "str") else str(err)
        print(f"access-eval {name}: Kafka error: {text}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `access-eval tail | head`: the reader left, which is fine
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --- output ---------------------------------------------------------------------------------------


def write_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def format_table(headers: list[str], rows: list[list[Any]], max_width: int = 80) -> str:
    """A plain aligned text table for terminals.

    Every cell goes through `display.printable` (one record is one row; no control, bidi or
    invisible character reaches the terminal) and is cut to `max_width` display columns.
    """
    cells = [[fit(printable(str(c)), max_width) for c in r] for r in [headers, *rows]]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
