"""Stream time per input partition (contract §5, Time): one partition running far ahead must not prune
the versions another partition held by the same instance still needs.

Expectations come from the contract's table, not from `simulate`: account A is `monitor` (nobody
allowlisted) from T0 and `limited` from T0 + 2 h; retention is 1 h of stream time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import Producer

from processor.codec.avro import EvalCodec
from processor.core.times import rfc3339_millis
from tests.support.kafka_harness import Topics, wait_until
from tests.support.processor_harness import produce, read_topic, settings_record, start_processor

HOUR = 3_600_000


def _attempt(attempt_id: str, target: str, t_ms: int) -> bytes:
    return json.dumps({
        "id": attempt_id, "event_time": rfc3339_millis(t_ms), "account_id": target,
        "identity": {"iam_id": "iam-x", "type": "user", "account_id": "acct-outside"},
        "action": "cloud-object-storage.object.read",
    }).encode()


def _to_partition(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    p.produce(topic, value, key, partition=partition)
    assert p.flush(30) == 0


def test_a_partition_far_ahead_does_not_prune_versions_another_partition_needs(
    topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=2)
    now = int(time.time() * 1000)
    t0 = now - 20 * HOUR
    target = "acct-stream-time"
    produce(topics.bootstrap, topics.settings, [
        settings_record({"account_id": target, "updated_at": rfc3339_millis(t0),
                         "external_account_identity_interaction": {"identity_types": {"user": {"state": "monitor"}}}}),
        settings_record({"account_id": target, "updated_at": rfc3339_millis(t0 + 2 * HOUR),
                         "external_account_identity_interaction": {"identity_types": {"user": {"state": "limited"}}}}),
    ])
    p = start_processor(topics, tmp_path, "--settings-retention-ms", str(HOUR))
    try:
        p.wait_ready()
        codec = EvalCodec()

        def events() -> dict[str, dict[str, object]]:
            return {e["attemptId"]: e for e in (codec.decode(m.value()) for m in read_topic(
                topics.bootstrap, topics.evals, timeout=10))}

        # Partition 0 runs 18 h ahead: under `limited` it is an enforced deny (emitted).
        _to_partition(topics.bootstrap, topics.attempts, 0, target.encode(), _attempt("ahead", target, now - 2 * HOUR))
        wait_until(lambda: "ahead" in events(), 60, "the event of the attempt far ahead")
        # Partition 1 is still at T0 + 30 min, when `monitor` was in force: a would-be deny, exact version.
        _to_partition(topics.bootstrap, topics.attempts, 1, target.encode(),
                      _attempt("behind", target, t0 + HOUR // 2))
        got = wait_until(lambda: events().get("behind"), 60, "the event of the attempt behind")
    finally:
        assert p.terminate() == 0, p.log()
    response = got["responseData"]
    assert isinstance(response, dict)
    assert (response["decision"], response["isEnforced"], response["state"]) == ("Deny", False, "monitor")
    assert response["settingsVersion"]["exact"] is True
