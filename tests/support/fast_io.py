"""Fast bulk publishing for tests that need a large topic quickly (bootstrap, staleness)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Producer


def fast_produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
                 partition: int | None = None) -> int:
    """A batched producer (big batches, lz4), waiting for every delivery; returns how many were sent."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})
    n = 0
    for key, value in records:
        while True:
            try:
                if partition is None:
                    p.produce(topic, value, key)
                else:
                    p.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
    assert p.flush(120) == 0, "undelivered records"
    return n
