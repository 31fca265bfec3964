"""Settings under fire on a compacted settings topic: versions, invalid records and tombstones while
processors are killed and the cleaner compacts; the live events and a replay after compaction agree
with the contract's model (tests/support/spec_model.py)."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from tests.support.fault_harness import (
    OwnBroker,
    check_exactly_once,
    record_figures,
)
from tests.support.fault_inputs import (
    SEED,
)
from tests.support.kafka_harness import Topics
from tests.support.settings_churn import (
    COMPACTING,
    UnderFire,
    _check_live,
    _replay_after_compaction,
    _replay_differences,
    _rounds_under_fire,
    _versions,
    settings_log,
)
from tests.support.spec_model import expect

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


def test_settings_under_fire_with_compaction(own: tuple[OwnBroker, Topics], tmp_path: Path) -> None:
    """Settings versions (with updated_at), invalid records and a tombstone published while attempts
    flow, each before the attempts it governs, on a settings topic the cleaner compacts meanwhile.

    Expected events come from the contract's model (spec_model.expect) over the records as published
    (several versions per account over time, invalid ones for the model to reject, a tombstone), or
    over the log as read back after compaction.

    From the second round on, a few attempts per account arrive late: their event time lies in the previous
    round, so the version in force then is not the newest one read (the event-time lookup, §6.2).

    A: a live processor (restarted once, after compaction, at a point where all work was committed)
       gives exactly the model over the full settings history: it keeps what it read, and after a
       restart only attempts governed by the latest versions remain.
    B: a processor replaying all attempts after compaction sees only the latest version per key:
       it gives exactly the model over the compacted log, which differs from the full history only
       where the governing version was compacted away (the event says exact=false) or where an
       account's last record is invalid (its valid version is gone: documented hazard)."""
    _, topics = own
    rounds, restart_after = 8, 4
    rng = random.Random(SEED + 4)
    started = time.monotonic()
    topics.create(partitions=3, settings_config=COMPACTING)
    w = UnderFire(accounts=[hashlib.md5(f"acct-{i}".encode()).hexdigest() for i in range(12)],
                  externals=[hashlib.md5(f"ext-{i}".encode()).hexdigest() for i in range(16)])
    _rounds_under_fire(w, topics, tmp_path, rng, rounds, restart_after, per_account=20)
    assert w.rejected_by_first == restart_after + 1, "each invalid record read live must be rejected once"
    spec_full, late_older, live = _check_live(w, topics)
    expected_full, kinds = spec_full.events, spec_full.exercised()

    # B: replay everything after compaction, as a new consumer group into new output topics.
    compacted, replay = _replay_after_compaction(topics, tmp_path)
    assert _versions(settings_log(topics.bootstrap, topics.settings)) == _versions(compacted), \
        "the compacted log changed during the replay"
    spec_compacted = expect(compacted, w.attempt_values)
    expected_compacted = spec_compacted.events
    replayed = check_exactly_once(replay.bootstrap, replay.evals, replay.dlq, replay.attempts, expected_compacted,
                                  set())
    assert replayed.ok, "B (replay after compaction): " + replayed.explain()
    differ, hazard_ids, older_than_kept = _replay_differences(w, expected_full, spec_compacted)
    assert all(not expected_compacted[a]["responseData.settingsVersion.exact"]
               for a in older_than_kept if a in expected_compacted), "events older than every kept version say so"
    record_figures("settings_under_fire", settings_records=w.published, invalid_settings=w.invalid_published,
                   tombstones=1, records_after_compaction=len(_versions(compacted)), attempts=len(w.attempt_values),
                   late_attempts=w.late_attempts, late_events_governed_by_an_older_version=len(late_older),
                   expected_decisions_live=kinds, expected_decisions_replay=spec_compacted.exercised(),
                   events_checked_live=live.events_checked, events_checked_replay=replayed.events_checked,
                   replay_same=len(expected_full.keys() & expected_compacted.keys() - differ),
                   replay_differs=len(differ), replay_differs_older_than_kept=len(older_than_kept),
                   replay_differs_hazard=len(hazard_ids), lost=live.lost + replayed.lost,
                   duplicated=live.duplicated + replayed.duplicated, seconds=round(time.monotonic() - started, 1))
    assert len(_versions(compacted)) < w.published, "the cleaner removed nothing"
    assert older_than_kept, "compaction made no difference to the replay: the test proves nothing"
    assert hazard_ids and not any(expected_compacted.get(a) for a in hazard_ids), \
        "the hazard account's valid version should be gone from the compacted log"
    assert differ == hazard_ids | older_than_kept, f"unexplained differences: {sorted(differ)[:5]}"
