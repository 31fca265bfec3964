"""Hostile attempts: every one dead-lettered with its reason, none crashes the processor, memory stays
bounded (SPEC §7)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from processor.core.ids import IDENTITY_TYPES
from processor.core.times import rfc3339_millis
from tests.support.fault_harness import (
    check_exactly_once,
    produce_tracked,
    record_figures,
    rss_kb,
    stacks,
)
from tests.support.fault_inputs import (
    SEED,
)
from tests.support.hostile_attempts import (
    HOSTILE_TARGET,
    MB,
    _dead_letters_not_as_sent,
    _hostile_records,
    good_attempt,
)
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import (
    settings_record,
    start_processor,
    wait_all_committed,
)
from tests.support.spec_model import expect

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


def test_hostile_attempts_all_dead_lettered_processor_alive_rss_bounded(topics: Topics, tmp_path: Path) -> None:
    """Hypothesis-generated mutations of a valid attempt (each invalid by SPEC §4), random bytes, 10 MB
    values, tombstones: each lands in the DLQ once with its reason and source coordinates; valid
    attempts in between are evaluated; the processor stays up and its memory stays bounded."""
    started = time.monotonic()
    rng = random.Random(SEED + 5)
    now_ms = int(time.time() * 1000)
    topics.create(partitions=2, config={"max.message.bytes": str(12 * MB)})
    monitor_all = {"account_id": HOSTILE_TARGET, "updated_at": rfc3339_millis(now_ms - 3_600_000),
                   "external_account_identity_interaction": {"identity_types": {
                       t: {"state": "monitor", "external_allowed_accounts": []} for t in IDENTITY_TYPES}}}
    produce_tracked(topics.bootstrap, topics.settings, [settings_record(monitor_all)])
    records, kinds = _hostile_records(now_ms, rng)
    warmup = [(HOSTILE_TARGET.encode(), json.dumps(good_attempt(f"warm-{i}", now_ms)).encode()) for i in range(200)]
    big = {"message.max.bytes": str(12 * MB)}

    p = start_processor(topics, tmp_path)
    try:
        p.wait_ready()
        produce_tracked(topics.bootstrap, topics.attempts, warmup, config=big)
        wait_all_committed(topics.bootstrap, topics.group, topics.attempts)
        rss_before = rss_kb(p.proc.pid)
        coords = produce_tracked(topics.bootstrap, topics.attempts, records, config=big)
        try:
            wait_all_committed(topics.bootstrap, topics.group, topics.attempts, timeout=120)
        except AssertionError:
            raise AssertionError(f"stuck on hostile input:\n{stacks(p.proc.pid)}\n{p.log()}") from None
        assert p.proc.poll() is None, f"hostile input must not crash the processor:\n{p.log()}"
        rss_after = rss_kb(p.proc.pid)
        assert p.terminate() == 0, p.log()
    finally:
        p.kill()
    sent = {coords[i]: (records[i], kind) for i, kind in enumerate(kinds) if kind is not None}
    valid_values = [v for (_, v), kind in zip(records, kinds, strict=True) if kind is None]
    # The contract's model: the valid attempts are would-be denies of the monitor_all account, and
    # every hostile input is invalid (the DLQ reasons are checked below).
    good = [v for _, v in warmup] + valid_values
    bad = [v for (_, v), kind in zip(records, kinds, strict=True) if kind is not None]
    spec = expect([(*settings_record(monitor_all), None)], good + bad, now_ms=now_ms)
    assert spec.invalid == list(range(len(good), len(good) + len(bad))), \
        "the model must find exactly the hostile inputs invalid"
    expected = spec.events
    assert "dup-last" in expected and "dup-first" not in expected
    result = check_exactly_once(topics.bootstrap, topics.evals, topics.dlq, topics.attempts, expected, set(sent))
    assert result.ok, result.explain()
    wrong = _dead_letters_not_as_sent(topics.bootstrap, topics.dlq, sent)
    assert not wrong, wrong[:10]
    record_figures("hostile_attempts", seed=SEED, bad_inputs=len(sent),
                   categories=dict(Counter(k for k in kinds if k)), valid_among_them=len(valid_values),
                   rss_before_kb=rss_before, rss_after_kb=rss_after,
                   events_checked=result.events_checked, dead_letters_checked=result.dead_letters_checked,
                   lost=result.lost, duplicated=result.duplicated, seconds=round(time.monotonic() - started, 1))
    assert rss_after - rss_before < 150 * 1024, f"RSS grew from {rss_before} kB to {rss_after} kB"
