"""Inputs the fault, cluster and soak suites share: a seeded workload, published settings, the work a
group still has to do, and the seed of a run (ACCESS_EVAL_FAULT_SEED, printed)."""

from __future__ import annotations

import json
import os
import time

from confluent_kafka import KafkaException

from processor.core.times import rfc3339_millis
from processor.local.workload import Mix, Workload
from tests.support.fault_harness import (
    produce_tracked,
)
from tests.support.kafka_harness import wait_until
from tests.support.processor_harness import (
    committed_offsets,
    end_offsets,
    settings_record,
)
from tests.support.spec_model import SettingsRecord

T0 = 1_795_000_000_000  # 2026-11-18: settings take effect here, attempts follow
SEED = int(os.environ.get("ACCESS_EVAL_FAULT_SEED", str(time.time_ns() % 1_000_000)))
#: A killed member stays in the group until its session times out (librdkafka default 45 s); the
#: tests shorten it to the broker's minimum so a restart gets its partitions back within seconds.
FAST_GROUP = {"ACCESS_EVAL_KAFKA_SESSION_TIMEOUT_MS": "3000", "ACCESS_EVAL_KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


def workload_inputs(seed: int, n: int, accounts: int = 300,
                    invalid: float = 0.01) -> tuple[Workload, list[bytes], list[tuple[bytes, bytes, str]]]:
    w = Workload(seed=seed, accounts=accounts, allowlist_max=5, mix=Mix(invalid=invalid))
    settings = [json.dumps({**d, "updated_at": rfc3339_millis(T0)}).encode() for d in w.settings()]
    attempts = list(w.attempts(n, start_ms=T0 + 1000, step_ms=1))
    return w, settings, attempts


def publish_settings(bootstrap: str, topic: str, settings: list[bytes]) -> list[SettingsRecord]:
    """Publish settings documents keyed by their account; returns the records as published (key,
    value, no timestamp: every document has `updated_at`) for spec_model.expect."""
    records = [settings_record(json.loads(s)) for s in settings]
    produce_tracked(bootstrap, topic, records)
    return [(k, v, None) for k, v in records]


def pending_work(bootstrap: str, group: str, topic: str) -> int:
    """Records between the group's committed offsets and the topic's end (work not yet committed)."""

    def probe() -> tuple[int] | None:
        try:
            ends = end_offsets(bootstrap, topic)
            got = committed_offsets(bootstrap, group, topic)
        except KafkaException:  # e.g. the coordinator is busy right after a member died: ask again
            return None
        return (sum(e - max(got.get(p, 0), 0) for p, e in ends.items()),)

    return wait_until(probe, 60, f"committed offsets of {group}")[0]


#: SASL/PLAIN users of the fault suite's own broker (tests/faults/conftest.py).
SASL_USERS = {"admin": "admin-secret", "alice": "alice-secret"}
