"""SIGTERM mid-batch (SPEC §8): the in-flight batch is finished and committed, the process exits 0 and
leaves the group, so the next instance gets the partitions at once (not after the session timeout) and
resumes exactly where the first one stopped: every attempt's event exactly once."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import (
    committed_offsets,
    produce,
    read_evals,
    settings_record,
    start_processor,
    wait_all_committed,
)

pytestmark = pytest.mark.kafka

N = 150_000
SESSION_MS = 45_000  # long on purpose: a member that does not leave would hold its partitions this long
SLOW_GROUP = {"ACCESS_EVAL_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS)}


def test_sigterm_mid_batch_commits_exits_zero_and_leaves_the_group(topics: Topics, tmp_path: Path) -> None:
    topics.create(partitions=3)
    produce(topics.bootstrap, topics.settings, [settings_record(doc("a", "monitor", []))], bulk=True)
    now = int(time.time() * 1000)
    # Every attempt is a would-be deny: one event each, identified by its id.
    produce(topics.bootstrap, topics.attempts, (attempt(i, "a", "b", now) for i in range(N)), bulk=True)
    a = start_processor(topics, tmp_path, "--shutdown-timeout-s", "15", instance="a", env=SLOW_GROUP)
    b = None
    try:
        a.wait_ready()
        wait_until(lambda: a.metric("access_eval_attempts_total") >= 1000, 60, "instance a to commit some work")
        done_at_sigterm = a.metric("access_eval_attempts_total")
        a.proc.send_signal(15)
        rc = a.proc.wait(30)
        assert rc == 0, a.log()
        assert done_at_sigterm < N, "SIGTERM must land mid-stream (the backlog was already done)"
        # What a committed is exactly what it emitted, through its last (in-flight) batch.
        after_a = committed_offsets(topics.bootstrap, topics.group, topics.attempts)
        events_a = read_evals(topics.bootstrap, topics.evals)
        assert sum(max(o, 0) for o in after_a.values()) == len(events_a) >= done_at_sigterm, (after_a, len(events_a))
        assert "signal received" in a.log() and '"stopped"' in a.log(), a.log()

        left = time.monotonic()
        b = start_processor(topics, tmp_path, instance="b", env=SLOW_GROUP)
        b.wait_ready()
        wait_until(lambda: json.loads(b.get("/readyz")[1] or "{}").get("assigned_partitions") == 3, 60,
                   "b to get all 3 partitions")
        took = time.monotonic() - left
        assert took < SESSION_MS / 1000 / 3, (
            f"b got the partitions {took:.1f} s after a exited: a did not leave the group "
            f"(session timeout {SESSION_MS / 1000:.0f} s)")
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=180)
        assert b.terminate() == 0, b.log()
    finally:
        a.kill()
        if b is not None:
            b.kill()
    ids = Counter(e["attemptId"] for _, e in read_evals(topics.bootstrap, topics.evals))
    expected = {f"att-{i}" for i in range(N)}
    assert set(ids) == expected, f"missing {len(expected - set(ids))}, unexpected {len(set(ids) - expected)}"
    dup = [k for k, n in ids.items() if n > 1]
    assert not dup, f"{len(dup)} duplicated, e.g. {dup[:5]}"
