"""Issue 23 (stream and lifecycle) on a real broker and the real `run` process: the poison pill of an
oversized key, and transaction timeouts of a single stalled instance (tests/stream/test_stream_hardening.py
and test_stream_lifecycle.py have the same findings on the in-memory fakes)."""

from __future__ import annotations

import hashlib
import signal
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import (
    produce,
    read_evals,
    read_topic,
    settings_record,
    start_processor,
    wait_all_committed,
)

# -- the poison pill on a real broker ---------------------------------------------------------------------


def test_a_one_megabyte_key_is_dead_lettered_on_a_real_broker(topics: Topics, tmp_path: Path) -> None:
    """Issue 23 on the real client: the broker accepts on the attempts topic an invalid attempt whose key
    is 1,000,000 bytes (its limit, max.message.bytes, is 1,048,588 by default); librdkafka's
    message.max.bytes (1,000,000) refuses its dead letter as it is (MSG_SIZE_TOO_LARGE). The processor
    dead-letters it with the key hashed, and both partitions commit."""
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    big = b"k" * 1_000_000
    p = Producer({"bootstrap.servers": topics.bootstrap, "message.max.bytes": 1_048_000, "enable.idempotence": True})
    p.produce(topics.attempts, b"{not json", big, partition=0, headers=[("trace", b"t-1")])
    now = int(time.time() * 1000)
    for i in range(20):
        key, value = attempt(f"ok-{i}", "a", "b", now)
        p.produce(topics.attempts, value, key, partition=i % 2)
    assert p.flush(30) == 0
    proc = start_processor(topics, tmp_path)
    try:
        proc.wait_ready()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=60)
    finally:
        assert proc.terminate() == 0, proc.log()
    [dead] = read_topic(topics.bootstrap, topics.dlq)
    h = dict(dead.headers())
    assert dead.key() == hashlib.sha256(big).hexdigest().encode() and h["error.key.hashed"] == b"1000000"
    assert h["error.reason"] == b"bad_json" and h["trace"] == b"t-1" and h["source.partition"] == b"0"
    assert len(read_topic(topics.bootstrap, topics.evals)) == 20


def _transaction_open(bootstrap: str, topic: str) -> bool:
    """A transaction is open on partition 0: its last stable offset is below its high watermark."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    lso = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=IsolationLevel.READ_COMMITTED)[tp].result(10)
    hw = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=IsolationLevel.READ_UNCOMMITTED)[tp].result(10)
    return bool(lso.offset < hw.offset)


def test_transaction_timeouts_on_a_real_broker_are_not_a_shared_transactional_id(topics: Topics,
                                                                                 tmp_path: Path) -> None:
    """Issue 23 on the real client: a single processor stalled (SIGSTOP) with a transaction open, longer
    than transaction.timeout.ms (3 s here) plus the broker's check period (10 s), twice: the broker
    aborts each transaction and the processor's next call fails as fenced. It must neither exit 2
    blaming a shared transactional id nor lose or duplicate anything."""
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    proc = start_processor(topics, tmp_path, "--commit-interval-ms", "1400", "--batch-size", "10",
                           env={"ACCESS_EVAL_KAFKA_TRANSACTION_TIMEOUT_MS": "3000"})
    try:
        proc.wait_ready()
        stalls, sent = 0, 0
        while stalls < 2:
            assert sent < 10 * 30, "never caught a transaction open"
            now = int(time.time() * 1000)
            produce(topics.bootstrap, topics.attempts, [attempt(f"s-{sent + i}", "a", "b", now) for i in range(30)])
            sent += 30
            # stop it while a transaction is open on the eval topic (records produced, not committed)
            wait_until(lambda: _transaction_open(topics.bootstrap, topics.evals), 10, "a transaction to be open")
            proc.proc.send_signal(signal.SIGSTOP)
            try:
                if _transaction_open(topics.bootstrap, topics.evals):  # not committed just before the stop
                    stalls += 1
                    wait_until(lambda: not _transaction_open(topics.bootstrap, topics.evals), 40,
                               "the broker to abort the stalled transaction (transaction.timeout.ms)")
            finally:
                proc.proc.send_signal(signal.SIGCONT)
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=60)
        assert proc.proc.poll() is None, proc.log()
        assert "transaction timed out" in proc.log() or "after transaction.timeout.ms" in proc.log(), proc.log()
    finally:
        assert proc.terminate() == 0, proc.log()
    ids = Counter(e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals))
    assert set(ids) == {f"att-s-{i}" for i in range(sent)}
    assert all(n == 1 for n in ids.values())
