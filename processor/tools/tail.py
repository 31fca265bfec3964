"""`access-eval tail`: eval events from the eval events topic, decoded, filtered, as JSON lines or a table."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import datetime
from typing import Any

from processor.core.display import fit, pad, printable
from processor.core.events import to_json_obj
from processor.core.ids import normalize_account
from processor.core.times import rfc3339_millis, to_millis
from processor.errors import EXIT_FAIL, EXIT_OK, usage_error
from processor.kafka.eval_reader import EvalReader
from processor.tools.common import (
    account_id,
    connect,
    kafka_props,
    now_ms,
    parse_since,
    raw_properties,
    topic_partitions,
)

# --- filters and output ---------------------------------------------------------------------------


class Filter:
    def __init__(self, args: argparse.Namespace) -> None:
        self.account = account_id(args.account) if args.account else None
        self.external = account_id(args.external_account, "--external-account") if args.external_account else None
        self.decision = args.decision
        self.enforced: bool | None = True if args.enforced else False if args.report_only else None
        self.identity_type = args.identity_type

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


def cmd_tail(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        usage_error("--limit must be at least 1")
    match = Filter(args)  # validates ids before any Kafka contact
    start: int | str
    if args.from_beginning:
        start = "beginning"
    elif args.since:
        start, _words = parse_since(args.since, now_ms())
    else:
        start = "end"
    stop_at_end = start != "end" and not args.follow
    props = kafka_props(args)
    partitions = topic_partitions(connect(props, args.timeout), args.eval_topic, "--eval-topic")
    reader = EvalReader(
        props, args.eval_topic, partitions, registry_url=args.schema_registry_url, raw_props=raw_properties(args)
    )
    out = sys.stdout
    printed = 0
    try:
        reader.start(start, timeout_s=args.timeout)
        if not stop_at_end:
            where = "the end" if start == "end" else "the start position"
            print(f"access-eval tail: following {args.eval_topic} from {where}; Ctrl-C to stop", file=sys.stderr)
            sys.stderr.flush()
        if args.format == "table":
            out.write(table_header() + "\n")
            out.flush()
        for event in reader.events(stop_at_end=stop_at_end, key=match.account):
            if not match(event):
                continue
            if args.format == "json":
                out.write(json.dumps(to_json_obj(event), separators=(",", ":")) + "\n")
            else:
                out.write(table_row(event) + "\n")
            out.flush()
            printed += 1
            if args.limit is not None and printed >= args.limit:
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
