"""Kafka plumbing of the sections: creating, preloading, counting and deleting topics; committed offsets."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.kafka.common import (
    machine_cpu_seconds,
)
from processor.local.publish import produce


def create_topics(bootstrap: str, specs: list[tuple[str, int, dict[str, str]]]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1, config=cfg) for name, n, cfg in specs],
        operation_timeout=30,
    )
    for f in futures.values():
        f.result(60)
    deadline = time.monotonic() + 60
    names = {name: n for name, n, _ in specs}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(
            name in md.topics
            and md.topics[name].error is None
            and len(md.topics[name].partitions) == n
            and all(p.leader >= 0 for p in md.topics[name].partitions.values())
            for name, n in names.items()
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {sorted(names)} did not get leaders")


#: When this process last deleted topics (time.monotonic()); see quiesce().
_last_delete = [0.0]
#: The broker removes a deleted topic's files this long after the delete (file.delete.delay.ms).
FILE_DELETE_DELAY_S = 60.0


def delete_topics(bootstrap: str, names: list[str]) -> None:
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            f.result(60)
    _last_delete[0] = time.monotonic()


def quiesce(max_wait_s: float = 150.0, busy_below: float = 0.3) -> float:
    """Let the previous section's background work end before a latency run: the broker removing the
    files of deleted topics (the pass-through ceiling writes ~0.5 GB per run), dirty pages written back
    (sync), then the machine's CPUs idle over 2 s. Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + max_wait_s
    pending = _last_delete[0] + FILE_DELETE_DELAY_S + 2.0 - started if _last_delete[0] else 0.0
    if pending > 0:
        time.sleep(min(pending, max_wait_s))  # the broker's delayed file deletion
    os.sync()
    while time.monotonic() < deadline:
        cpu0, t0 = machine_cpu_seconds(), time.monotonic()
        time.sleep(2.0)  # measurement window
        if (machine_cpu_seconds() - cpu0) / (time.monotonic() - t0) < busy_below:
            break
    return round(time.monotonic() - started, 1)


def preload(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], **extra: Any) -> tuple[int, int]:
    """Produce idempotently (lz4, large batches) and wait for every delivery; (records, bytes)."""
    done = produce(bootstrap, topic, records, bulk=True,
                   config={"queue.buffering.max.messages": 500_000, **extra})
    return done.count, done.bytes


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe", "enable.auto.commit": False})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions_of(bootstrap, topic)
        }
    finally:
        c.close()


def count_committed_records(bootstrap: str, topic: str, timeout: float = 120) -> int:
    """Records a read_committed consumer sees from the beginning to the end of a topic."""
    ends = end_offsets(bootstrap, topic)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    at_end = {p for p, e in ends.items() if e == 0}
    n = 0
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < len(ends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"counting {topic}: not at the end after {timeout}s")
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
    finally:
        c.close()
    return n


class CommitWatch:
    """Polls a group's committed offsets on a topic (one long-lived client, read_uncommitted so the
    OffsetFetch never waits for a pending transaction)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.parts = [TopicPartition(topic, p) for p in partitions_of(bootstrap, topic)]
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.last = 0

    def total(self) -> int:
        """Sum of committed offsets; the last known sum while the coordinator is (re)loading."""
        try:
            self.last = sum(max(tp.offset, 0) for tp in self.c.committed(self.parts, timeout=10))
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in (
                KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                KafkaError.COORDINATOR_NOT_AVAILABLE,
            ):
                raise
        return self.last

    def close(self) -> None:
        self.c.close()
