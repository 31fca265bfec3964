"""Bulk publishing to a development broker: the one produce loop of the demo, the tests and the benchmarks.

It lives in `local/` because it serves a broker someone is developing against (preloading topics,
the demo's history): the processor's own output goes through its transactions in `stream/`, never
through this. A full local queue (`BufferError`) is waited out by serving deliveries, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from processor.errors import LocalKafkaError
from processor.kafka import clients

#: A record: (key, value), or (key, value, timestamp in epoch ms).
Record = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, int]

#: Producer settings for throughput (big lz4 batches, a deep queue): preloading large topics quickly.
BULK: dict[str, Any] = {"linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4",
                        "queue.buffering.max.messages": 2_000_000}

_POLL_EVERY = 5000  # serve delivery callbacks now and then, so they do not pile up until flush


@dataclass
class Delivered:
    """What `produce` published: how many records, their value bytes and, when tracked, where each went."""

    count: int = 0
    bytes: int = 0
    #: (partition, offset) of each record, in input order; empty unless `track=True`.
    coords: list[tuple[int, int]] = field(default_factory=list)


def send_all(producer: Producer, topic: str, records: Iterable[Record], *,
             callback_for: Callable[[int], Callable[[KafkaError | None, Any], None]] | None = None,
             **produce_args: Any) -> tuple[int, int]:
    """Queue every record on `producer` (the caller flushes) with `produce_args`; `callback_for(i)`
    gives record i's own delivery callback. Returns (records, value bytes)."""
    n = size = 0
    for key, value, *ts in records:
        args = dict(produce_args, timestamp=ts[0]) if ts else produce_args
        if callback_for is not None:
            args = dict(args, on_delivery=callback_for(n))
        while True:
            try:
                producer.produce(topic, value, key, **args)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)
        n += 1
        size += len(value or b"")
        if n % _POLL_EVERY == 0:
            producer.poll(0)
    return n, size


def produce(bootstrap: str, topic: str, records: Iterable[Record], *, bulk: bool = False,
            config: dict[str, Any] | None = None, headers: list[tuple[str, bytes]] | None = None,
            partition: int | None = None, track: bool = False, timeout: float = 120.0) -> Delivered:
    """Publish idempotently, in order, and wait for every delivery; raises LocalKafkaError naming
    the first failures if any record was not delivered. `bulk` uses the `BULK` settings, `config`
    adds or overrides producer settings, `track` records each record's (partition, offset)."""
    failures: list[str] = []
    coords: list[tuple[int, int] | None] = []

    def failed(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    def tracker(index: int) -> Callable[[KafkaError | None, Any], None]:
        coords.append(None)

        def delivered(err: KafkaError | None, msg: Any) -> None:
            failed(err, msg)
            if err is None:
                coords[index] = (msg.partition(), msg.offset())
        return delivered

    producer = Producer(clients.publisher_conf({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                                **(BULK if bulk else {}), **(config or {})}))
    args: dict[str, Any] = {"headers": headers} if headers else {}
    if partition is not None:
        args["partition"] = partition
    if not track:
        args["on_delivery"] = failed  # one callback for all: no closure per record
    count, size = send_all(producer, topic, records, callback_for=tracker if track else None, **args)
    undelivered = producer.flush(timeout)
    if undelivered or failures or None in coords:
        raise LocalKafkaError(f"publishing to {topic}: {undelivered} records undelivered after {timeout:.0f} s,"
                              f" {len(failures)} failed (first: {failures[:3]})")
    return Delivered(count, size, [c for c in coords if c is not None])
