"""`access-eval tail`: eval events from the eval events topic, decoded, filtered, as JSON lines or a table."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processor.core.display import fit, pad, printable
from processor.core.events import to_json_obj
from processor.core.ids import normalize_account
from processor.core.times import rfc3339_millis, to_millis
from processor.errors import EXIT_FAIL, EXIT_OK, usage_error
from processor.kafka.eval_reader import EvalReader
from processor.tools.accounts import account_id
from processor.tools.connection import connect, kafka_props, raw_properties, topic_partitions
from processor.tools.durations import now_ms, parse_since


@dataclass(frozen=True)
class TailOptions:
    """What `tail` was asked (typed, so the command runs and is tested without argparse;
    `processor.cli.tail` builds it from the flags). Ids are raw flag values, validated by `Filter`."""

    eval_topic: str
    bootstrap_servers: str | None = None
    kafka_config: str | None = None
    timeout_s: float = 15.0
    schema_registry_url: str | None = None
    # where it starts and when it stops
    from_beginning: bool = False
    since: str | None = None
    follow: bool = False
    limit: int | None = None
    # filters
    account: str | None = None
    external_account: str | None = None
    decision: str | None = None
    enforced: bool = False
    report_only: bool = False
    identity_type: str | None = None
    fmt: str = "json"


# --- filters and output ---------------------------------------------------------------------------


class Filter:
    def __init__(self, opts: TailOptions) -> None:
        self.account = account_id(opts.account) if opts.account else None
        self.external = account_id(opts.external_account, "--external-account") if opts.external_account else None
        self.decision = opts.decision
        self.enforced: bool | None = True if opts.enforced else False if opts.report_only else None
        self.identity_type = opts.identity_type

    def __call__(self, e: dict[str, Any]) -> bool:
        rd = e["responseData"]
        if self.account is not None and normalize_account(e["target"]["accountId"]) != self.account:
            return False
        if self.external is not None and normalize_account(e["initiator"]["authnAccountId"]) != self.external:
            return False
        if self.decision is not None and rd["decision"] != self.decision:
            return False
        if self.enforced is not None and rd["isEnforced"] != self.enforced:
            return False
        return self.identity_type is None or e["initiator"]["typeURI"] == self.identity_type


#: (header, display width) of the streaming table; the last column is not padded, only cut.
COLUMNS = (
    ("EVENT TIME", 24),
    ("TARGET ACCOUNT", 32),
    ("DECISION", 8),
    ("MODE", 8),
    ("TYPE", 10),
    ("FROM ACCOUNT", 32),
    ("IDENTITY", 28),
    ("ACTION", 64),
)


def _cell(text: str, columns: int, last: bool = False) -> str:
    """One cell: input text escaped (`printable`: one event is one row, nothing a terminal obeys),
    cut to `columns` display columns (marked `…`), padded unless it is the last."""
    cut = fit(printable(text), columns)
    return cut if last else pad(cut, columns)


def _line(cells: tuple[object, ...]) -> str:
    last = len(COLUMNS) - 1
    return "  ".join(_cell(str(c), w, i == last) for i, (c, (_h, w)) in enumerate(zip(cells, COLUMNS, strict=True)))


def table_header() -> str:
    return _line(tuple(h for h, _w in COLUMNS)).rstrip()


def table_row(e: dict[str, Any]) -> str:
    t = e["eventTime"]
    ms = to_millis(t) if isinstance(t, datetime) else int(t)
    rd = e["responseData"]
    cells = (
        rfc3339_millis(ms),
        e["target"]["accountId"],
        rd["decision"],
        "enforced" if rd["isEnforced"] else "report",
        e["initiator"]["typeURI"],
        e["initiator"]["authnAccountId"],
        e["initiator"]["id"],
        e["target"]["action"],
    )
    return _line(cells).rstrip()


def cmd_tail(opts: TailOptions) -> int:
    if opts.limit is not None and opts.limit < 1:
        usage_error("--limit must be at least 1")
    match = Filter(opts)  # validates ids before any Kafka contact
    start: int | str
    if opts.from_beginning:
        start = "beginning"
    elif opts.since:
        start, _words = parse_since(opts.since, now_ms())
    else:
        start = "end"
    stop_at_end = start != "end" and not opts.follow
    props = kafka_props(opts)
    partitions = topic_partitions(connect(props, opts.timeout_s), opts.eval_topic, "--eval-topic")
    reader = EvalReader(
        props, opts.eval_topic, partitions, registry_url=opts.schema_registry_url, raw_props=raw_properties(opts)
    )
    out = sys.stdout
    printed = 0
    try:
        reader.start(start, timeout_s=opts.timeout_s)
        if not stop_at_end:
            where = "the end" if start == "end" else "the start position"
            print(f"access-eval tail: following {opts.eval_topic} from {where}; Ctrl-C to stop", file=sys.stderr)
            sys.stderr.flush()
        if opts.fmt == "table":
            out.write(table_header() + "\n")
            out.flush()
        for event in reader.events(stop_at_end=stop_at_end, key=match.account):
            if not match(event):
                continue
            if opts.fmt == "json":
                out.write(json.dumps(to_json_obj(event), separators=(",", ":")) + "\n")
            else:
                out.write(table_row(event) + "\n")
            out.flush()
            printed += 1
            if opts.limit is not None and printed >= opts.limit:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is how `tail` without a limit ends
    finally:
        _close_quietly(reader)
    summary = reader.summary()
    if summary is not None:
        print(f"access-eval tail: {summary}", file=sys.stderr)
    if reader.nothing_decodable:
        print("access-eval tail: no event could be decoded", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _close_quietly(reader: EvalReader) -> None:
    with contextlib.suppress(Exception):  # closing after an error must not hide the error
        reader.close()
