"""SPEC §2: the eval event's key is the (normalised) target account id, never the input record's key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.stream.test_pipeline import T0, attempt, doc
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import (
    process_all,
    produce,
    read_evals,
    settings_record,
)

pytestmark = pytest.mark.kafka


def test_output_key_is_the_normalised_target_account_whatever_the_input_key(topics: Topics,
                                                                            tmp_path: Path) -> None:
    topics.create(partitions=3)
    produce(topics.bootstrap, topics.settings,
            [settings_record(doc("acct-a", "monitor", [])), settings_record(doc("acct-b", "limited", []))])
    records: list[tuple[bytes | None, bytes | None]] = []
    targets = ["acct-a", " ACCT-A ", "Acct-B", "acct-b\t"]
    keys: list[bytes | None] = [None, uuid.uuid4().hex.encode(), b"acct-b", b"acct-a", b"", "ünï".encode()]
    for i in range(24):
        _, value = attempt(f"k{i}", targets[i % len(targets)], f"ext-{i}", T0 + i)
        records.append((keys[i % len(keys)], value))
    produce(topics.bootstrap, topics.attempts, records)
    process_all(topics, tmp_path)
    got = read_evals(topics.bootstrap, topics.evals)
    assert len(got) == 24
    sent = {json.loads(v or b"")["id"]: json.loads(v or b"")["account_id"] for _, v in records}
    wrong = [(k, e["attemptId"]) for k, e in got if k != sent[e["attemptId"]].strip().lower().encode()]
    assert not wrong, f"eval keys not equal to the normalised target account: {wrong[:5]}"
