"""Reliability under faults (SPEC §7 bad input, §8 delivery), against the real broker.

Every test ends with the same check (fault_harness.check_exactly_once): a read_committed reader
finds exactly one eval event per expected attempt, equal to `simulate` on the same inputs, and
exactly one dead letter per invalid attempt (by source partition/offset). Figures go to stdout and
to $ACCESS_EVAL_FAULT_REPORT (docs/guarantees.md quotes them).

Knobs (environment): ACCESS_EVAL_FAULT_ATTEMPTS (crash loop size, default 200000),
ACCESS_EVAL_FAULT_KILLS (default 12), ACCESS_EVAL_FAULT_SEED (random kill timing; printed).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from fault_harness import (
    check_exactly_once,
    count_uncommitted_visible,
    produce_tracked,
    record_figures,
    simulate_by_attempt,
)
from kafka_harness import Topics, wait_until
from processor_harness import (
    RunningProcessor,
    committed_offsets,
    end_offsets,
    settings_record,
    start_processor,
    wait_all_committed,
)

from processor.ids import rfc3339_millis
from processor.workload import Mix, Workload

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

T0 = 1_795_000_000_000  # 2026-11-18: settings take effect here, attempts follow
SEED = int(os.environ.get("ACCESS_EVAL_FAULT_SEED", str(time.time_ns() % 1_000_000)))
#: A killed member stays in the group until its session times out (librdkafka default 45 s); the
#: tests shorten it to the broker's minimum so a restart gets its partitions back within seconds.
FAST_GROUP = {"ACCESS_EVAL_KAFKA_SESSION_TIMEOUT_MS": "6000", "ACCESS_EVAL_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}


def workload_inputs(seed: int, n: int, accounts: int = 300,
                    invalid: float = 0.01) -> tuple[Workload, list[bytes], list[tuple[bytes, bytes, str]]]:
    w = Workload(seed=seed, accounts=accounts, allowlist_max=5, mix=Mix(invalid=invalid))
    settings = [json.dumps({**d, "updated_at": rfc3339_millis(T0)}).encode() for d in w.settings()]
    attempts = list(w.attempts(n, start_ms=T0 + 1000, step_ms=1))
    return w, settings, attempts


def publish_settings(bootstrap: str, topic: str, settings: list[bytes]) -> None:
    produce_tracked(bootstrap, topic, [settings_record(json.loads(s)) for s in settings])


def lagging(bootstrap: str, group: str, topic: str) -> bool:
    """Whether the group's committed offsets are behind the topic's end (work was still pending)."""

    def probe() -> tuple[bool] | None:
        try:
            ends = end_offsets(bootstrap, topic)
            got = committed_offsets(bootstrap, group, topic)
        except KafkaException:  # e.g. the coordinator is busy right after a member died: ask again
            return None
        return (any(got.get(p, -1) < e for p, e in ends.items() if e > 0),)

    return wait_until(probe, 60, f"committed offsets of {group}")[0]


# --------------------------------------------------------------------------------------------------
# 1. Crash loop


def test_crash_loop_sigkill_exactly_once(topics: Topics, tmp_path: Path) -> None:
    """SIGKILL at random moments (some right after a commit, i.e. inside the next transaction),
    restart with the same transactional id each time: nothing lost, nothing duplicated."""
    n = int(os.environ.get("ACCESS_EVAL_FAULT_ATTEMPTS", "200000"))
    kills = int(os.environ.get("ACCESS_EVAL_FAULT_KILLS", "12"))
    rng = random.Random(SEED)
    started = time.monotonic()
    topics.create(partitions=6)
    _, settings, attempts = workload_inputs(seed=21, n=n)
    publish_settings(topics.bootstrap, topics.settings, settings)
    expected = simulate_by_attempt(tmp_path, settings, [v for _, v, _ in attempts])
    invalid = [i for i, (_, _, o) in enumerate(attempts) if o == "invalid"]

    # The stream arrives in chunks, one before each (re)start, so every kill finds work in flight.
    chunks = [attempts[i * n // (kills + 1):(i + 1) * n // (kills + 1)] for i in range(kills + 1)]
    coords: list[tuple[int, int]] = []
    kill_log: list[str] = []
    mid_stream = 0
    p: RunningProcessor | None = None
    try:
        for k in range(kills):
            coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[k]])
            p = start_processor(topics, tmp_path, "--batch-size", "1000", env=FAST_GROUP)
            p.wait_ready(90)
            if k % 2 == 0:  # right after a transaction committed: the next one is open
                wait_until(lambda p=p: p.metric("access_eval_transactions_total", result="committed") >= 1
                           or p.proc.poll() is not None, 60, "a first commit after the restart", interval=0.002)
                how = "after-commit"
            else:  # at a random millisecond
                delay = rng.uniform(0, 0.8)
                time.sleep(delay)  # random kill timing, not a synchronisation wait
                how = f"+{delay * 1000:.0f}ms"
            assert p.proc.poll() is None, f"processor died on its own before kill {k + 1}:\n{p.log()}"
            txns = p.metric("access_eval_transactions_total", result="committed")
            p.kill()
            pending = lagging(topics.bootstrap, topics.group, topics.attempts)
            mid_stream += pending
            kill_log.append(f"kill {k + 1} {how}: {txns:.0f} commits, work pending={pending}")
        coords += produce_tracked(topics.bootstrap, topics.attempts, [(key, v) for key, v, _ in chunks[-1]])
        p = start_processor(topics, tmp_path, env=FAST_GROUP)
        p.wait_ready(90)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=240)
        assert p.terminate() == 0, p.log()
    finally:
        if p is not None:
            p.kill()
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts,
                                expected, {coords[i] for i in invalid})
    aborted = (count_uncommitted_visible(topics.bootstrap, topics.evals)
               + count_uncommitted_visible(topics.bootstrap, topics.dlq)
               - result.events_checked - result.dead_letters_checked)
    figures = dict(seed=SEED, attempts=n, kills=kills, kills_with_work_pending=mid_stream,
                   aborted_records_of_killed_transactions=aborted, events_checked=result.events_checked,
                   dead_letters_checked=result.dead_letters_checked, lost=result.lost,
                   duplicated=result.duplicated, mismatched=result.mismatched,
                   seconds=round(time.monotonic() - started, 1))
    record_figures("crash_loop", **figures)
    assert result.ok, result.explain() + "\n" + "\n".join(kill_log)
    assert result.events_checked == len(expected) and result.dead_letters_checked == len(invalid)
    assert mid_stream >= kills // 2, f"too few kills hit pending work (seed {SEED}):\n" + "\n".join(kill_log)
    # Killed transactions really had records on the broker, which the restart aborted (fencing).
    assert aborted > 0, f"no kill landed inside a transaction with produced records (seed {SEED})"

