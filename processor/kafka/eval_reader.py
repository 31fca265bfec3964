"""The eval-topic reader of `tail` and `report`.

The reader assigns every partition (no consumer group, nothing committed), reads committed events
only, detects the framing of each message by its magic bytes and stops, when asked, at the end
offsets the topic had when reading started.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from processor.codec.avro import CONFLUENT_MAGIC, DecodeError, EvalCodec
from processor.core.ids import normalize_account
from processor.kafka import clients

#: librdkafka needs a group id to build a consumer; the reader never joins it (assign only).
READER_GROUP = "access-eval-tail"
OFFSET_BEGINNING = -2


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
        # Without a registry, Confluent-framed events are refused per message (`decode`): decoding them
        # with a guessed schema would silently misread another schema version.
        self.resolve_id: Callable[[int], dict[str, Any]] | None = None
        if registry_url:
            from processor.kafka.registry import resolver

            self.resolve_id = resolver(registry_url, raw_props)
        self.consumer = Consumer(clients.log_reader_conf(props, READER_GROUP, fetch_wait_ms=100))
        self.targets: dict[int, int] = {}
        self.done: set[int] = set()
        #: Messages decoded, and skipped as undecodable (of which: Confluent-framed without a registry).
        self.decoded = 0
        self.undecodable = 0
        self.needs_registry = 0

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, int]:
        """The end offset (high watermark) of each of the reader's partitions now."""
        from confluent_kafka import TopicPartition

        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)[1]
                for p in self.partitions}

    def start(self, start: int | str, timeout_s: float = 10.0, ends: dict[int, int] | None = None) -> None:
        """`start`: "beginning", "end", or a timestamp (ms): the first record written at or after it.
        `ends`: where to stop (`stop_at_end`), taken by `end_offsets` (default: now)."""
        from confluent_kafka import TopicPartition

        self.targets = {p: ends[p] for p in self.partitions} if ends is not None else self.end_offsets(timeout_s)
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
        if value[:1] == CONFLUENT_MAGIC and len(value) >= 5 and self.resolve_id is None:
            self.undecodable += 1
            self.needs_registry += 1
            print(
                f"access-eval: skipping Confluent-framed event at {self.where(m)} (schema id "
                f"{int.from_bytes(value[1:5], 'big')}): pass --schema-registry-url to decode it",
                file=sys.stderr,
            )
            return None
        try:
            event = self.codec.decode(value, self.resolve_id)
        except (DecodeError, LookupError) as exc:
            self.undecodable += 1
            print(f"access-eval: skipping undecodable event at {self.where(m)}: {exc}", file=sys.stderr)
            return None
        self.decoded += 1
        return event

    def where(self, m: Any) -> str:
        return f"{self.topic} [{m.partition()}] @ {m.offset()}"

    @property
    def nothing_decodable(self) -> bool:
        """Every message read was undecodable (and there was at least one)."""
        return self.undecodable > 0 and self.decoded == 0

    def summary(self) -> str | None:
        """One line on the skipped messages, or None when none was skipped."""
        return undecodable_summary(self.decoded, self.undecodable, self.needs_registry)

    def records(self, *, stop_at_end: bool, key: str | None = None) -> Iterator[Any]:
        """Raw messages; `key` skips records keyed with another account (a record without a key is kept)."""
        if key is None:
            yield from self.messages(stop_at_end=stop_at_end)
            return
        wanted = key.encode()
        for m in self.messages(stop_at_end=stop_at_end):
            k = m.key()
            if k is None or k == wanted or _normalized_key(k) == key:
                yield m

    def events(self, *, stop_at_end: bool, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Decoded events; `key` skips (without decoding) records keyed with another account."""
        for m in self.records(stop_at_end=stop_at_end, key=key):
            event = self.decode(m)
            if event is not None:
                yield event

    def close(self) -> None:
        self.consumer.close()


def _normalized_key(key: bytes) -> str | None:
    """A record key as an account id (the one normaliser), None when it is not UTF-8."""
    try:
        return normalize_account(key.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def undecodable_summary(decoded: int, undecodable: int, needs_registry: int) -> str | None:
    """One line on the messages skipped as undecodable, or None when none was skipped."""
    if not undecodable:
        return None
    text = f"{undecodable} of {undecodable + decoded} events read could not be decoded"
    if needs_registry:
        text += f" ({needs_registry} Confluent-framed: pass --schema-registry-url)"
    return text
