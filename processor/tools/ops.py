"""Operator tools (SPEC §10): `settings put|get|delete|list`, `tail`, `report`.

This module holds the argument parsing, the helpers every tool shares (Kafka properties, broker
check, account ids, durations, error handling) and the `report` command; `settings_cli` and `tail`
hold the other commands.

Exit status of every tool: 0 success, 1 Kafka / registry / delivery failure, 2 invalid input
(bad flag value, invalid settings, missing confirmation). Errors are one line on stderr, never a
traceback.
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
from typing import TYPE_CHECKING, Any, NoReturn

from processor.config import KAFKA_ENV_PREFIX, ConfigError, read_properties
from processor.core.ids import normalize_account, rfc3339_millis, to_millis

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

DEFAULT_SETTINGS_TOPIC = "iam.account-settings"
DEFAULT_EVAL_TOPIC = "iam.access-evaluations"
DEFAULT_TIMEOUT_S = 15.0
MAX_ACCOUNT_LEN = 256

#: librdkafka's own log lines (connection refused, ...) go here, silent unless ACCESS_EVAL_LOG_LEVEL=DEBUG;
#: the tools report failures themselves in one line.
rdkafka_log = logging.getLogger("access_eval.librdkafka")
rdkafka_log.propagate = False
rdkafka_log.addHandler(logging.NullHandler())

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


class OpsError(Exception):
    """A failure the user can act on: printed as one line, exit `code`."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> NoReturn:
    raise OpsError(message, EXIT_USAGE)


# --- identifiers and time -------------------------------------------------------------------------

_BAD_ID_CHARS = re.compile(r"[\s,\"'\\\x00-\x1f\x7f]")


def account_id(raw: str, flag: str = "--account") -> str:
    """A normalised account id, or a usage error naming the flag (empty, too long, spaces, commas...)."""
    acct = normalize_account(raw)
    if not acct:
        usage_error(f"{flag}: account id is empty")
    if len(acct) > MAX_ACCOUNT_LEN:
        usage_error(f"{flag}: account id longer than {MAX_ACCOUNT_LEN} characters")
    bad = _BAD_ID_CHARS.search(acct)
    if bad:
        usage_error(f"{flag}: invalid account id {raw!r}: contains {bad.group()!r}")
    return acct


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
            usage_error(f"{flag}: invalid duration {text!r}: use e.g. 30d, 12h, 15m, 90s, 1d12h")
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos == 0 or total <= 0:
        usage_error(f"{flag}: invalid duration {text!r}: use e.g. 30d, 12h, 15m, 90s, 1d12h")
    return int(total)


def parse_since(text: str, now_ms: int, flag: str = "--since") -> tuple[int, str]:
    """A duration back from now (`30d`) or an RFC 3339 instant -> (start ms, words for messages)."""
    if "T" in text or (text[:4].isdigit() and "-" in text):
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            usage_error(f"{flag}: invalid time {text!r}: use a duration (30d) or RFC 3339 (2026-11-01T00:00:00Z)")
        if dt.tzinfo is None:
            usage_error(f"{flag}: {text!r} has no UTC offset: add Z or +HH:MM")
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


def raw_properties(args: argparse.Namespace) -> dict[str, str]:
    """The properties file (--kafka-config / ACCESS_EVAL_KAFKA_CONFIG), then ACCESS_EVAL_KAFKA_* variables."""
    props: dict[str, str] = {}
    path = args.kafka_config or os.environ.get("ACCESS_EVAL_KAFKA_CONFIG")
    if path:
        props.update(read_properties(Path(path)))
    for name, value in os.environ.items():
        if name.startswith(KAFKA_ENV_PREFIX) and name != "ACCESS_EVAL_KAFKA_CONFIG":
            props[name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = value
    return props


def kafka_props(args: argparse.Namespace) -> dict[str, Any]:
    """librdkafka configuration for the tools: pass-through properties + bootstrap + quiet logging."""
    from processor.config import kafka_only

    bootstrap = args.bootstrap_servers or os.environ.get("ACCESS_EVAL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        usage_error("--bootstrap-servers (or ACCESS_EVAL_BOOTSTRAP_SERVERS) is required")
    props: dict[str, Any] = kafka_only(raw_properties(args))
    props["bootstrap.servers"] = bootstrap
    props["logger"] = rdkafka_log
    return props


def connect(props: dict[str, Any], timeout_s: float) -> Any:
    """An AdminClient on a cluster that answered a metadata request, or OpsError (one line)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from processor.kafka.admin import AUTH_ERRORS

    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**props, "error_cb": errors.append}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
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


def quiet_processor_logs() -> None:
    """The settings table logs rejected records; the tools report them in their own output."""
    logging.getLogger("access_eval.settings").setLevel(logging.CRITICAL)


# --- running a command ----------------------------------------------------------------------------


def run_tool(name: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a tool; every anticipated failure becomes one line on stderr and an exit status."""
    from confluent_kafka import KafkaException

    if os.environ.get("ACCESS_EVAL_LOG_LEVEL", "").upper() == "DEBUG":
        rdkafka_log.propagate = True
    try:
        return func(args)
    except OpsError as exc:
        print(f"access-eval {name}: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"access-eval {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KafkaException as exc:
        err = exc.args[0]
        text = err.str() if hasattr(err, "str") else str(err)
        print(f"access-eval {name}: Kafka error: {text}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `access-eval tail | head`: the reader left, which is fine
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def write_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


# --- argument parsing -----------------------------------------------------------------------------

SETTINGS_EXAMPLES = """examples:
  # report-only for users, allowlisting one partner account (service and service_id stay as they are)
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --identity-type user --state monitor --allow 0b1c2d3e4f5a69788796a5b4c3d2e1f0
  # switch users to limited, keeping the allowlist; add one more account to it
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --identity-type user --state limited --add-allow 9f8e7d6c5b4a39281706f5e4d3c2b1a0
  # a whole document from a file (the IAM account settings JSON)
  access-eval settings put --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f \\
      --file settings.json
  access-eval settings get --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f
  access-eval settings list --bootstrap-servers 127.0.0.1:9092 --format json
  access-eval settings delete --bootstrap-servers 127.0.0.1:9092 --account a3f1c0d2e4b5968778695a4b3c2d1e0f --yes

exit status: 0 ok, 1 Kafka failure, 2 invalid input or missing confirmation
"""

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


def _common(p: argparse.ArgumentParser) -> None:
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


def _settings_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings-topic",
        default=os.environ.get("ACCESS_EVAL_SETTINGS_TOPIC", DEFAULT_SETTINGS_TOPIC),
        help=f"compacted settings topic (default {DEFAULT_SETTINGS_TOPIC}; ACCESS_EVAL_SETTINGS_TOPIC)",
    )


def _eval_topic(p: argparse.ArgumentParser) -> None:
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


def _format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=["table", "json"], default=default, help=f"output format (default {default})")


def _parser(sub: SubParsers, name: str, help_text: str, description: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _add_settings(sub: SubParsers) -> None:
    p = _parser(
        sub,
        "settings",
        "read and change account settings on the settings topic",
        "Read and change the external identity interaction settings of accounts on the compacted settings "
        "topic. Documents are validated with the processor's own models before anything is sent.",
        SETTINGS_EXAMPLES,
    )
    ssub = p.add_subparsers(dest="settings_command", metavar="ACTION")
    ssub.required = True

    put = _parser(
        ssub,
        "put",
        "publish a settings document (whole, or one identity type merged into the current one)",
        "Publish the settings of an account. With --file, the document in the file (its account_id may be "
        "omitted; if present it must match --account). With --identity-type/--state, that identity type is "
        "set and merged into the account's current document read from the topic: other identity types are "
        "kept, and so is the type's allowlist unless --allow/--add-allow/--remove-allow/--clear-allow change it. "
        "The producer is idempotent and the command waits for the broker's acknowledgement.",
        SETTINGS_EXAMPLES,
    )
    _common(put)
    _settings_topic(put)
    put.add_argument("--account", required=True, help="account id (the record key)")
    put.add_argument("--file", help="settings JSON document (SPEC §3 shape)")
    put.add_argument("--identity-type", choices=["user", "service_id", "service"], help="identity type to set")
    put.add_argument("--state", help="enabled, monitor or limited")
    put.add_argument(
        "--allow", nargs="+", action="extend", metavar="ID", help="replace the type's allowlist with these ids"
    )
    put.add_argument("--add-allow", nargs="+", action="extend", metavar="ID", help="add ids to the type's allowlist")
    put.add_argument(
        "--remove-allow", nargs="+", action="extend", metavar="ID", help="remove ids from the type's allowlist"
    )
    put.add_argument("--clear-allow", action="store_true", help="empty the type's allowlist")
    put.add_argument("--updated-at", help="RFC 3339 time from which this version is in force (default: now)")
    put.add_argument("--dry-run", action="store_true", help="validate and print the document, send nothing")
    put.set_defaults(func=lambda a: run_tool("settings put", _settings("put"), a))

    get = _parser(
        ssub,
        "get",
        "show an account's settings in force now",
        "Read the settings topic fully (like the processor's global table) and show the account's "
        "settings in force now; identity types without settings are shown as enabled.",
        SETTINGS_EXAMPLES,
    )
    _common(get)
    _settings_topic(get)
    get.add_argument("--account", required=True, help="account id")
    _format(get)
    get.set_defaults(func=lambda a: run_tool("settings get", _settings("get"), a))

    delete = _parser(
        ssub,
        "delete",
        "publish a tombstone: the account reverts to defaults (all enabled)",
        "Publish a tombstone (null value) for the account: from its timestamp every identity type of the "
        "account is enabled (nothing is evaluated or reported). Asks for confirmation on a terminal; "
        "without a terminal --yes is required.",
        SETTINGS_EXAMPLES,
    )
    _common(delete)
    _settings_topic(delete)
    delete.add_argument("--account", required=True, help="account id")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=lambda a: run_tool("settings delete", _settings("delete"), a))

    lst = _parser(
        ssub,
        "list",
        "list every account with settings",
        "Read the settings topic fully and list every account with settings in force now "
        "(deleted accounts are not listed).",
        SETTINGS_EXAMPLES,
    )
    _common(lst)
    _settings_topic(lst)
    _format(lst)
    lst.set_defaults(func=lambda a: run_tool("settings list", _settings("list"), a))


def _settings(action: str) -> Callable[[argparse.Namespace], int]:
    from processor.tools import settings as settings_cli

    func: Callable[[argparse.Namespace], int] = getattr(settings_cli, f"cmd_{action}")
    return func


def _add_tail(sub: SubParsers) -> None:
    p = _parser(
        sub,
        "tail",
        "print eval events (JSON lines or a table), with filters",
        "Print eval events from the eval events topic, decoded, as JSON lines (the same rendering as "
        "`simulate`) or a compact table.",
        TAIL_EXAMPLES,
    )
    _common(p)
    _eval_topic(p)
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
    _format(p, default="json")
    p.set_defaults(func=lambda a: run_tool("tail", _tail, a))


def _tail(args: argparse.Namespace) -> int:
    from processor.tools import tail

    return tail.cmd_tail(args)


def _add_report(sub: SubParsers) -> None:
    p = _parser(
        sub,
        "report",
        "what switching an account to limited would deny (from the eval events)",
        "Summarise an account's would-be denies from the eval events topic: by external account and "
        "identity, with the allowlist additions that would have permitted them, and a plain verdict.",
        REPORT_EXAMPLES,
    )
    _common(p)
    _eval_topic(p)
    _settings_topic(p)
    p.add_argument("--account", required=True, help="the account to report on")
    p.add_argument("--since", default="30d", help="window: a duration back from now (default 30d) or an RFC 3339 time")
    _format(p)
    p.set_defaults(func=lambda a: run_tool("report", cmd_report, a))


def register(sub: SubParsers) -> None:
    """Add `settings`, `tail` and `report` to the `access-eval` parser."""
    _add_settings(sub)
    _add_tail(sub)
    _add_report(sub)


# --- report ---------------------------------------------------------------------------------------

#: Eval events are produced after their attempt's event time, except attempts up to the processor's
#: max-future bound (1 h) ahead of its clock: start reading this much before the window.
SEEK_MARGIN_MS = 2 * 3_600_000


def cmd_report(args: argparse.Namespace) -> int:
    from processor.core.readiness import DenyAggregator, render_report_table
    from processor.tools.tail import EvalReader

    account = account_id(args.account)
    now = now_ms()
    start_ms, window = parse_since(args.since, now)
    props = kafka_props(args)
    admin = connect(props, args.timeout)
    partitions = topic_partitions(admin, args.eval_topic, "--eval-topic")
    current = _current_settings(admin, props, args, account)

    agg = DenyAggregator(per_identity=True)
    reader = EvalReader(
        props, args.eval_topic, partitions, registry_url=args.schema_registry_url, raw_props=raw_properties(args)
    )
    try:
        reader.start(start_ms - SEEK_MARGIN_MS, timeout_s=args.timeout)
        for event in reader.events(stop_at_end=True, key=account):
            target = event["target"]
            if normalize_account(target["accountId"]) != account:
                continue
            event_ms = _ms(event["eventTime"])
            if event_ms < start_ms:
                continue
            rd = event["responseData"]
            if rd["state"] == "monitor":
                if rd["decision"] == "Deny":
                    agg.count("would_be_deny")
                    ini = event["initiator"]
                    agg.add_deny(
                        account,
                        ini["typeURI"],
                        normalize_account(ini["authnAccountId"]),
                        ini["id"],
                        event_ms,
                        target["action"],
                        name=ini.get("name"),
                    )
                elif rd["decision"] == "Permit":
                    agg.count("permit")
            elif rd["state"] == "limited" and rd["decision"] == "Deny":
                agg.count("enforced_deny")
    finally:
        reader.close()

    report = agg.account_report(account, start_ms, now, window, current=current)
    report["undecodable_events"] = reader.undecodable
    if args.format == "json":
        write_json(report)
    else:
        sys.stdout.write(render_report_table(report))
        sys.stdout.flush()
    return EXIT_OK


def _ms(value: Any) -> int:
    return to_millis(value) if isinstance(value, datetime) else int(value)


def _current_settings(
    admin: Any, props: dict[str, Any], args: argparse.Namespace, account: str
) -> dict[str, Any] | None:
    """The account's settings in force now, when the settings topic can be read (else None)."""
    if not topic_exists(admin, args.settings_topic):
        return None
    from processor.tools.settings import read_view

    try:
        view = read_view(props, args.settings_topic, args.timeout)
    except OpsError:
        return None
    return view.current(account, now_ms()).as_json()
