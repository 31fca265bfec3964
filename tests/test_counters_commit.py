"""SPEC §8 on the real processor: Prometheus counters move only after the transaction commits.

With a long commit interval the work of an open transaction sits for seconds between being processed
and being committed; a counter sampled at any moment must never be ahead of what a read_committed
reader sees right after, and at the end must equal the committed output exactly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from kafka_harness import Topics, wait_until
from processor_harness import (
    produce,
    read_topic,
    settings_record,
    start_processor,
    wait_all_committed,
)
from test_pipeline import attempt, doc

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
