"""`access-eval tail`, and the eval-topic reader it shares with `report`.

The reader assigns every partition (no consumer group, nothing committed), reads committed events
only, detects the framing of each message by its magic bytes and stops, when asked, at the end
offsets the topic had when reading started.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from processor.codec.avro import DecodeError, EvalCodec
from processor.core.events import to_json_obj
from processor.core.ids import normalize_account, rfc3339_millis, to_millis
from processor.tools.ops import (
    EXIT_OK,
    account_id,
    connect,
    kafka_props,
    now_ms,
    parse_since,
    raw_properties,
    topic_partitions,
    usage_error,
)

OFFSET_BEGINNING = -2
OFFSET_END = -1


class EvalReader:
    """Decoded eval events from every partition of a topic, committed only."""

    def __init__(
        self,
        props: dict[str, Any],
        topic: str,
        partitions: list[int],
        *,
        registry_url: str | None = None,
        raw_props: dict[str, str] | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.partitions = partitions
        self.codec = EvalCodec()
        self.has_registry = bool(registry_url)
        # Without a registry, Confluent-framed events are read with the current schema (warned once).
        self.resolve_id: Callable[[int], dict[str, Any]] = lambda _sid: self.codec.schema_json
        if registry_url:
            from processor.kafka.registry import resolver

            self.resolve_id = resolver(registry_url, raw_props)
        self.consumer = Consumer(
            {
                **props,
                "group.id": "access-eval-tail",  # required by librdkafka; never joined (assign only)
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
        self.targets: dict[int, int] = {}
        self.done: set[int] = set()
        self.undecodable = 0
        self._warned_no_registry = False

    def start(self, start: int | str, timeout_s: float = 10.0) -> None:
        """`start`: "beginning", "end", or a timestamp (ms): the first record written at or after it."""
        from confluent_kafka import TopicPartition

        for p in self.partitions:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
            self.targets[p] = high
        if start == "beginning":
            offsets = dict.fromkeys(self.partitions, OFFSET_BEGINNING)
        elif start == "end":
            offsets = dict(self.targets)
        else:
            assert isinstance(start, int)
            found = self.consumer.offsets_for_times(
                [TopicPartition(self.topic, p, max(start, 0)) for p in self.partitions], timeout=timeout_s
            )
            # -1: nothing written at or after the time: start at the end.
            offsets = {tp.partition: tp.offset if tp.offset >= 0 else self.targets[tp.partition] for tp in found}
        for p, off in offsets.items():
            if off >= 0 and off >= self.targets[p]:
                self.done.add(p)
        self.consumer.assign([TopicPartition(self.topic, p, off) for p, off in offsets.items()])

    def at_end(self) -> bool:
        return len(self.done) == len(self.partitions)

    def messages(self, *, stop_at_end: bool, idle_s: float = 0.2) -> Iterator[Any]:
        """Raw messages; with stop_at_end, until every partition reached its start-up end offset."""
        from confluent_kafka import KafkaError, KafkaException

        while not (stop_at_end and self.at_end()):
            for m in self.consumer.consume(500, idle_s):
                err = m.error()
                p = m.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p is not None and (m.offset() or 0) >= self.targets.get(p, 0):
                            self.done.add(p)
                        continue
                    if err.fatal() or err.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    ):
                        raise KafkaException(err)
                    continue
                if p is not None and (m.offset() or 0) + 1 >= self.targets.get(p, 0):
                    self.done.add(p)
                yield m

    def decode(self, m: Any) -> dict[str, Any] | None:
        value = m.value()
        if value is None:
            return None
        if value[:1] == b"\x00" and not self.has_registry and not self._warned_no_registry:
            self._warned_no_registry = True
            print(
                "access-eval: warning: Confluent-framed events and no --schema-registry-url: decoding them with "
                "the current schema",
                file=sys.stderr,
            )
        try:
            return self.codec.decode(value, self.resolve_id)
        except (DecodeError, LookupError) as exc:
            self.undecodable += 1
            print(
                f"access-eval: skipping undecodable event at {self.topic} [{m.partition()}] @ {m.offset()}: {exc}",
                file=sys.stderr,
            )
            return None

    def events(self, *, stop_at_end: bool, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Decoded events; `key` skips (without decoding) records keyed with another account."""
        wanted = key.encode() if key is not None else None
        for m in self.messages(stop_at_end=stop_at_end):
            if wanted is not None:
                k = m.key()
                if k is not None and k != wanted and k.strip().lower() != wanted:
                    continue
            event = self.decode(m)
            if event is not None:
                yield event

    def close(self) -> None:
        self.consumer.close()


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


#: (header, width) of the streaming table; the last column is not padded.
COLUMNS = (
    ("EVENT TIME", 24),
    ("TARGET ACCOUNT", 32),
    ("DECISION", 8),
    ("MODE", 8),
    ("TYPE", 10),
    ("FROM ACCOUNT", 32),
    ("IDENTITY", 28),
    ("ACTION", 0),
)


def _cell(text: str, width: int) -> str:
    if width == 0:
        return text
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "~"


def table_header() -> str:
    return "  ".join(_cell(h, w) for h, w in COLUMNS).rstrip()


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
    return "  ".join(_cell(str(c), w) for c, (_h, w) in zip(cells, COLUMNS, strict=True)).rstrip()


def cmd_tail(args: argparse.Namespace) -> int:
    import json

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
    return EXIT_OK


def _close_quietly(reader: EvalReader) -> None:
    with contextlib.suppress(Exception):  # closing after an error must not hide the error
        reader.close()
