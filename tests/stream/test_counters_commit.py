"""SPEC §8 on the real processor: Prometheus counters move only after the transaction commits.

With a long commit interval the work of an open transaction sits for seconds between being processed
and being committed; a counter sampled at any moment must never be ahead of what a read_committed
reader sees right after, and at the end must equal the committed output exactly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

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

pytestmark = pytest.mark.kafka

COMMIT_MS = 2500


def test_counters_never_ahead_of_the_committed_output(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    # Every attempt is a would-be deny with an event: counter and committed output count the same thing.
    p = start_processor(topics, tmp_path, "--commit-interval-ms", str(COMMIT_MS), "--batch-size", "50")
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            now = int(time.time() * 1000)
            produce(topics.bootstrap, topics.attempts, [attempt(f"{i}-{j}", "a", "b", now) for j in range(20)])
            i += 1
            stop.wait(0.1)  # pacing the offered rate

    feeder = threading.Thread(target=feed, daemon=True)
    samples: list[tuple[float, int]] = []
    try:
        p.wait_ready()
        feeder.start()
        deadline = time.monotonic() + 4 * COMMIT_MS / 1000
        while time.monotonic() < deadline:
            counted = p.metric("access_eval_attempts_total", outcome="would_be_deny")
            committed = len(read_topic(topics.bootstrap, topics.evals))
            samples.append((counted, committed))
            assert counted <= committed, (
                f"/metrics counts {counted:.0f} would-be denies while only {committed} events are committed: "
                f"counters moved before the commit (samples so far {samples})")
        stop.set()
        feeder.join(10)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=60)
        committed = len(read_topic(topics.bootstrap, topics.evals))
        wait_until(lambda: p.metric("access_eval_attempts_total", outcome="would_be_deny") == committed, 10,
                   f"the counter to equal the {committed} committed events")
        assert p.metric("access_eval_attempts_total") == committed
    finally:
        stop.set()
        assert p.terminate() == 0, p.log()
    assert any(c > 0 for c, _ in samples), f"the stream never got going while sampling: {samples}"


FENCE_COMMIT_MS = 10_000


def test_a_fenced_commit_moves_no_counter_and_the_output_stays_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """SPEC §8 with a commit that FAILS on the real broker: while the processor's transaction holds a
    batch, a second producer initialises the same transactional.id, so the broker aborts that
    transaction and the processor's commit fails (fenced). The counters must not move for the aborted
    batch (sampled against the read_committed output throughout), the batch is redone and counted once,
    and the output is exactly-once. Also shows, on the real client, that the offsets' metadata token
    (the "whose commit was it" check of a commit in doubt) round-trips through send_offsets_to_transaction."""
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))])
    p = start_processor(topics, tmp_path, "--commit-interval-ms", str(FENCE_COMMIT_MS), "--batch-size", "50")
    txn_id = f"{topics.group}-a"  # start_processor's --transactional-id
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        counted = p.metric("access_eval_attempts_total", outcome="would_be_deny")
        committed = len(read_topic(topics.bootstrap, topics.evals))
        samples.append((counted, committed))
        assert counted <= committed, f"counters ahead of the committed output: {samples}"

    try:
        p.wait_ready()
        now = int(time.time() * 1000)
        produce(topics.bootstrap, topics.attempts, [attempt(f"first-{i}", "a", "b", now) for i in range(100)])
        wait_until(lambda: p.metric("access_eval_attempts_total") == 100, 60, "the first 100 to be committed")
        produce(topics.bootstrap, topics.attempts, [attempt(f"second-{i}", "a", "b", now) for i in range(100)])
        # The second batch sits in an open transaction for up to FENCE_COMMIT_MS; fence it meanwhile.
        # access_eval_batch_size moves when a batch is processed (before its commit): 200 attempts in all
        wait_until(lambda: p.metric("access_eval_batch_size_sum") >= 200, 5,
                   "the processor to take the second batch into its open transaction")
        intruder = Producer({"bootstrap.servers": topics.bootstrap, "transactional.id": txn_id})
        intruder.init_transactions(30)  # bumps the epoch: the processor's open transaction is aborted
        del intruder  # never used again (the processor's replacement producer fences it in turn)
        sample()
        assert samples[-1] == (100, 100), samples
        wait_until(lambda: p.metric("access_eval_transactions_total", result="aborted") >= 1, 60,
                   "the processor's commit to fail (fenced)")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            sample()
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=90)
        wait_until(lambda: p.metric("access_eval_attempts_total") == 200, 30, "the redone batch to be counted")
        sample()
        assert p.proc.poll() is None, "one fencing must not stop the processor\n" + p.log()
        consumer = Consumer({"bootstrap.servers": topics.bootstrap, "group.id": topics.group})
        try:
            [tp] = consumer.committed([TopicPartition(topics.attempts, 0)], timeout=10)
        finally:
            consumer.close()
        assert tp.offset == 200 and (tp.metadata or "").startswith("access-eval:"), (tp, tp.metadata)
    finally:
        assert p.terminate() == 0, p.log()
    ids = Counter(e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals))
    assert set(ids) == {f"att-first-{i}" for i in range(100)} | {f"att-second-{i}" for i in range(100)}
    assert all(n == 1 for n in ids.values()), [k for k, n in ids.items() if n > 1][:5]
    assert samples[-1] == (200, 200), samples
