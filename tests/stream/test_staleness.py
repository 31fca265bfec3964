"""Bounded staleness on the real broker (SPEC §5, `--staleness-ms`): a settings change published more than
the bound before an attempt is evaluated governs that attempt, whether or not the processor has applied it yet.

The test does not wait for the processor to apply the change (that would prove nothing: a processor
that never checks freshness would pass too). It makes the settings view lag instead: a burst of filler
settings records just before the change keeps the table busy for seconds, so the attempt reaches the
processor long before the change would be applied by the loop's background polling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.stream.test_pipeline import attempt, doc
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import produce, read_evals, start_processor, wait_all_committed

pytestmark = pytest.mark.kafka

STALENESS_MS = 200
FILLER = 150_000


def test_change_published_before_the_bound_governs_the_attempt_without_waiting(topics: Topics,
                                                                                tmp_path: Path) -> None:
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.settings,
            [(b"acct-a", json.dumps(doc("acct-a", "monitor", [])).encode())], bulk=True)
    p = start_processor(topics, tmp_path, "--staleness-ms", str(STALENESS_MS))
    try:
        p.wait_ready()
        # Warm-up: one attempt under the first version, so the loop and its clients are running.
        now = int(time.time() * 1000)
        produce(topics.bootstrap, topics.attempts, [attempt("warm", "acct-a", "ext-1", now)])
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=30)
        applied_before = p.metric("access_eval_settings_records_total")

        filler = [(f"filler-{i:06d}".encode(), json.dumps(doc(f"filler-{i:06d}", "monitor", [])).encode())
                  for i in range(FILLER)]
        change_ms = int(time.time() * 1000)
        produce(topics.bootstrap, topics.settings,
                [*filler, (b"acct-a", json.dumps(doc("acct-a", "limited", [], change_ms)).encode())], bulk=True)
        # The attempt is published more than the bound after the change was acknowledged; nothing waits
        # for the processor here.
        time.sleep(1.5 * STALENESS_MS / 1000)  # the precondition of the promise, not a synchronisation wait
        produce(topics.bootstrap, topics.attempts,
                [attempt("governed", "acct-a", "ext-1", int(time.time() * 1000))])
        applied_at_publish = p.metric("access_eval_settings_records_total") - applied_before
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=120)
        wait_until(lambda: p.metric("access_eval_settings_records_total") - applied_before >= FILLER + 1, 60,
                   "every settings record applied")
    finally:
        assert p.terminate() == 0, p.log()
    # The test is only meaningful if the view lagged when the attempt was published.
    assert applied_at_publish < FILLER + 1, (
        f"the settings table had already applied everything ({applied_at_publish}) when the attempt was "
        "published: the test did not exercise the staleness bound")
    events = {e["attemptId"]: e["responseData"] for _, e in read_evals(topics.bootstrap, topics.evals)}
    assert events["att-warm"]["state"] == "monitor"
    governed = events["att-governed"]
    assert governed["state"] == "limited" and governed["isEnforced"] is True, (
        f"the attempt published {1.5 * STALENESS_MS:.0f} ms after the change was evaluated against the old "
        f"version: {governed} (the table had applied {applied_at_publish} of {FILLER + 1} records then)")
