"""Interop with a real schema registry: Apicurio Registry 3.3.3 through its Confluent-compatible API
(`/apis/ccompat/v7`), started once per session like `access-eval local registry start` (BACKWARD global
compatibility, in-memory). Each test uses its own topics, hence its own subject `<eval-topic>-value`.

The downstream consumer here is built only from confluent-kafka (Consumer + AvroDeserializer +
SchemaRegistryClient): no project code decodes, and expectations come from the decision table of
docs/contract.md §5.1 computed in the test.

The registry unreachable or gone, concurrent registration, the local registry:
`test_registry_apicurio_availability.py`.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from processor.local.registry import RegistryInfo
from tests.codec.test_schema_evolution import resolution_failures
from tests.support.kafka_harness import Topics
from tests.support.processor_harness import process_all, produce
from tests.support.registry_harness import apicurio
from tests.support.registry_interop import (
    EVENT_NS,
    FRIEND,
    MONITOR,
    REPO,
    SCHEMA_FILE,
    SR_TIMEOUT_S,
    STRANGERS,
    attempts,
    consume_with_registry,
    dt,
    expected_event,
    framed,
    log_lines,
    monitor_settings,
    next_compatible,
    next_incompatible,
    older_schema,
    publish_settings,
    registered_ids,
    shipped_schema,
)

__all__ = ["apicurio"]


# --- run writes the Confluent wire format; a plain confluent-kafka consumer reads it ----------------


def test_run_registers_and_a_plain_confluent_consumer_decodes_every_event(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1)
    now = int(time.time() * 1000)
    updated = now - 60_000
    produce(topics.bootstrap, topics.settings, [(MONITOR.encode(), json.dumps(monitor_settings(updated)).encode())])
    sent = attempts(36, now)
    proc = process_all(topics, tmp_path, "--schema-registry-url", apicurio.url,
                        records=[(MONITOR.encode(), json.dumps(a).encode()) for a in sent])

    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    assert subject in client.get_subjects()
    latest = client.get_latest_version(subject)
    assert json.loads(latest.schema.schema_str) == shipped_schema()
    assert registered_ids(proc.log()) == [latest.schema_id]

    got = consume_with_registry(topics.bootstrap, topics.evals, apicurio.url)
    assert len(got) == len(sent)
    for raw, _ in got:
        assert raw[:1] == b"\x00" and struct.unpack(">I", raw[1:5])[0] == latest.schema_id
    by_attempt = {rec["attemptId"]: rec for _, rec in got}
    assert sorted(by_attempt) == sorted(a["id"] for a in sent)  # one event each, none twice
    before, after = dt(now - 5_000), datetime.now(UTC)
    for a in sent:
        rec = copy.deepcopy(by_attempt[a["id"]])
        assert before <= rec["observer"].pop("evaluatedAt") <= after
        assert rec["reason"].pop("reasonType")  # a short text, free wording
        assert rec == expected_event(a, topics.settings, updated), a["id"]
    decisions = {rec["responseData"]["decision"] for rec in by_attempt.values()}
    assert decisions == {"Permit", "Deny"}


# --- tail and report resolve ids, including older and newer versions --------------------------------


def sample_record(schema: dict[str, Any], attempt_id: str, ext: str, event_ms: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": str(uuid.uuid5(EVENT_NS, attempt_id)), "action": "iam-access-management.account-settings.eval",
        "eventTime": event_ms, "attemptId": attempt_id,
        "initiator": {"id": f"iam-{attempt_id}", "typeURI": "user", "name": None, "authnAccountId": ext,
                      "host": {"address": None, "agent": None}},
        "target": {"accountId": MONITOR, "id": None, "serviceName": None, "action": "svc.read"},
        "responseData": {"decision": "Deny", "isEnforced": False, "state": "monitor", "allowlisted": False,
                         "settingsVersion": {"effectiveTime": None, "topic": None, "partition": None,
                                             "offset": None, "exact": True}},
        "outcome": "failure", "severity": "normal", "reason": {"reasonCode": 403, "reasonType": "hand-made"},
        "observer": {"name": "another-producer", "version": "0", "evaluatedAt": event_ms},
    }
    names = {f["name"] for f in next(f for f in schema["fields"] if f["name"] == "target")["type"]["fields"]}
    if "serviceName" not in names:
        del rec["target"]["serviceName"]
    if any(f["name"] == "region" for f in schema["fields"]):
        rec["region"] = "eu-de"
    return rec


def test_tail_and_report_resolve_ids_of_older_current_and_newer_versions(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1)
    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    old_id = client.register_schema(subject, Schema(json.dumps(older_schema()), "AVRO"))
    now = int(time.time() * 1000)
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(), framed(old_id, older_schema(), sample_record(older_schema(), "old-1", STRANGERS[0], now))),
        (MONITOR.encode(), framed(old_id, older_schema(), sample_record(older_schema(), "old-2", STRANGERS[1], now))),
    ])
    publish_settings(topics, now - 60_000)
    sent = attempts(8, now, prefix="cur")
    proc = process_all(topics, tmp_path, "--schema-registry-url", apicurio.url,
                        records=[(MONITOR.encode(), json.dumps(a).encode()) for a in sent])
    current_id = registered_ids(proc.log())[0]
    new_id = client.register_schema(subject, Schema(json.dumps(next_compatible()), "AVRO"))
    assert len({old_id, current_id, new_id}) == 3
    assert client.get_versions(subject) == [1, 2, 3]
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(), framed(new_id, next_compatible(), sample_record(next_compatible(), "new-1", FRIEND, now))),
    ])

    common = ["--bootstrap-servers", topics.bootstrap, "--eval-topic", topics.evals,
              "--schema-registry-url", apicurio.url]
    tail = subprocess.run([sys.executable, "-m", "processor", "tail", *common, "--from-beginning"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert tail.returncode == 0, tail.stderr
    events = {e["attemptId"]: e for e in map(json.loads, tail.stdout.splitlines())}
    assert sorted(events) == sorted(["old-1", "old-2", "new-1", *(a["id"] for a in sent)])
    assert events["old-1"]["target"]["serviceName"] is None  # the reader default for the older version
    assert events["new-1"]["initiator"]["authnAccountId"] == FRIEND
    assert "warning" not in tail.stderr and "skipp" not in tail.stderr

    report = subprocess.run([sys.executable, "-m", "processor", "report", *common, "--settings-topic",
                             topics.settings, "--account", MONITOR, "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    got = json.loads(report.stdout)
    expected: dict[str, int] = {}
    for a in sent:
        if a["identity"]["account_id"] != FRIEND:
            expected[a["identity"]["account_id"]] = expected.get(a["identity"]["account_id"], 0) + 1
    expected[STRANGERS[0]] += 1  # old-1
    expected[STRANGERS[1]] += 1  # old-2
    expected[FRIEND] = 1  # new-1: a hand-made Deny from an account that is allowlisted today
    assert got["would_be_denies"] == sum(expected.values())
    assert {x["account_id"]: x["attempts"] for x in got["external_accounts"]} == expected


# --- schema evolution: the registry judges, and agrees with the repository's guard ------------------


def test_schema_evolution_registry_and_evolution_guard_agree(
    apicurio: RegistryInfo, topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=1, only=[topics.evals])
    client = SchemaRegistryClient({"url": apicurio.url, "timeout": SR_TIMEOUT_S})
    subject = f"{topics.evals}-value"
    current_id = client.register_schema(subject, Schema(SCHEMA_FILE.read_text(), "AVRO"))
    now = int(time.time() * 1000)
    produce(topics.bootstrap, topics.evals, [
        (MONITOR.encode(),
         framed(current_id, shipped_schema(), sample_record(shipped_schema(), "v1", STRANGERS[0], now)))])

    for candidate, compatible in ((next_compatible(), True), (next_incompatible(), False)):
        guard = resolution_failures(writer=shipped_schema(), reader=candidate) == []  # BACKWARD, by the guard
        judge = client.test_compatibility(subject, Schema(json.dumps(candidate), "AVRO"))
        assert (guard, judge) == (compatible, compatible), candidate["fields"][-1]

    # the compatible one registers, and events written before it still decode (with it as reader, too)
    v2_id = client.register_schema(subject, Schema(json.dumps(next_compatible()), "AVRO"))
    assert v2_id != current_id
    for reader in (None, json.dumps(next_compatible())):
        [(_, rec)] = consume_with_registry(topics.bootstrap, topics.evals, apicurio.url, reader)
        assert rec["attemptId"] == "v1" and rec.get("region") is None

    # the incompatible one: `run` with it as schemas/eval_event.avsc refuses to start, exit 2, one line
    schema_dir = tmp_path / "schemas"
    schema_dir.mkdir()
    (schema_dir / "eval_event.avsc").write_text(json.dumps(next_incompatible()))
    proc = subprocess.run(
        [sys.executable, "-m", "processor", "run", "--bootstrap-servers", topics.bootstrap, "--metrics-port", "0",
         "--eval-topic", topics.evals, "--schema-registry-url", apicurio.url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ACCESS_EVAL_SCHEMA_DIR": str(schema_dir)},
    )
    assert proc.returncode == 2, proc.stderr
    errors = [e for e in log_lines(proc.stderr) if e["level"] == "error"]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert subject in errors[0]["msg"] and "compatibility rule BACKWARD" in errors[0]["msg"], errors[0]
    assert client.get_versions(subject) == [1, 2]  # nothing registered by the refused start
